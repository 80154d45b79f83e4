/**
 * A job whose backend stays unavailable past its attempts is parked and retried for `unavailableRetryMs` from when it
 * first met the outage, not from when it was made: a schedule makes each run's job one period ahead (an hour for
 * cleanup, a day for backup), and a job can wait in a backlog, either of which used up the whole window before the
 * job first ran.
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

describe('parked retries of a job that waited before its first run', () => {
  it('a delayed job is parked for the window (from its first run, after its delay), then fails', async () => {
    const jobId = 'objects-added-ahead';
    const dueAt = Date.now() + 2_000;
    await p.queues.queue('objects').add('write', { store: 'main', key: 'k', body: inlineBody('x') }, { jobId, delay: 2_000 });
    await p.waitForJobState(jobId, 'failed');

    const job = (await p.queues.getJob(jobId))!;
    expect(job.attemptsStarted).toBeGreaterThan(1); // parked at least once, with one attempt allowed
    expect(job.finishedOn! - dueAt).toBeGreaterThanOrEqual(1_000); // retried well into the window after it was due
    expect(job.failedReason).toMatch(/backend is down/);
  });

  it('are parked for the window counted from the first run, however long the job waited in a backlog', async () => {
    const objects = p.queues.queue('objects');
    await objects.pause(); // no worker takes it: a backlog
    const { jobId } = await p.queues.enqueue('write', { store: 'main', key: 'backlogged', body: inlineBody('x') });
    await new Promise((resolve) => setTimeout(resolve, 2_000)); // longer than the window
    const before = down.calls.length;
    await objects.resume();
    await p.waitForJobState(jobId, 'failed');

    const runs = down.calls.slice(before);
    expect(runs.length).toBeGreaterThan(1); // parked at least once, with one attempt allowed
    expect((await p.queues.getJob(jobId))!.finishedOn! - runs[0]!).toBeGreaterThanOrEqual(1_000); // well into a window of its own
  });
});
