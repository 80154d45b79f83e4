/**
 * A job whose backend stays unavailable past its attempts is parked and retried for `unavailableRetryMs` from when it
 * was due, not from when it was made: a schedule makes each run's job one period ahead (an hour for cleanup, a day
 * for backup), which used up the whole window before the job first ran.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProviderUnavailableError } from '../../src/providers/errors.js';
import { RamProvider } from '../../src/providers/ram.js';
import { failingFirst, inlineBody, startPipeline, type Pipeline } from './fixtures/pipeline.js';

const down = failingFirst(new RamProvider({ maxBytes: 1024 * 1024 }), 'write', Number.POSITIVE_INFINITY, () => new ProviderUnavailableError('backend is down'));
let p: Pipeline;

beforeAll(async () => {
  p = await startPipeline('parked-delayed', { stores: new Map([['main', down.provider]]), attempts: 1, backoffDelayMs: 50 });
  await p.startWorkers({ unavailableRetryMs: 1_500 });
});

afterAll(async () => {
  await p?.close();
});

describe('parked retries of a job that was added with a delay', () => {
  it('are parked for the window counted from when the job was due, then fail', async () => {
    const jobId = 'objects-added-ahead';
    const dueAt = Date.now() + 2_000;
    await p.queues.queue('objects').add('write', { store: 'main', key: 'k', body: inlineBody('x') }, { jobId, delay: 2_000 });
    await p.waitForJobState(jobId, 'failed');

    const job = (await p.queues.getJob(jobId))!;
    expect(job.attemptsStarted).toBeGreaterThan(1); // parked at least once, with one attempt allowed
    expect(job.finishedOn! - dueAt).toBeGreaterThanOrEqual(1_000); // retried well into the window after it was due
    expect(job.failedReason).toMatch(/backend is down/);
  });
});
