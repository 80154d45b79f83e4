/**
 * A failed job that a repeated request (same Idempotency-Key) runs again is a run like the first: parked while its
 * store stays down, for a window counted from the repeat, and its failure told again with a `job.failed` of its own.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProviderUnavailableError } from '../../src/providers/errors.js';
import { RamProvider } from '../../src/providers/ram.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { interceptMethod } from '../support/intercept.js';
import { inlineBody, startPipeline, type Pipeline } from './fixtures/pipeline.js';

const WINDOW_MS = 1_200;
const ram = new RamProvider({ maxBytes: 1024 * 1024 });
let down = true;
let runs = 0;
const store: StorageProvider = interceptMethod(ram, 'write', (write) => async (...args) => {
  runs++;
  if (down) throw new ProviderUnavailableError('the store is down (simulated)');
  return write(...args);
});
let p: Pipeline;

beforeAll(async () => {
  p = await startPipeline('rerun-failed', { stores: new Map([['main', store]]), attempts: 1, backoffDelayMs: 50 });
  await p.startWorkers({ unavailableRetryMs: WINDOW_MS });
});

afterAll(async () => {
  await p?.close();
});

describe('a failed job run again by a repeated request', () => {
  it('is parked again while the store is down, fails with a job.failed of its own, and completes once it is back', async () => {
    const request = () => p.queues.enqueue('write', { store: 'main', key: 'doc', body: inlineBody('hello') }, { idempotencyKey: 'order-7' });
    const { jobId } = await request();
    await p.waitForJobState(jobId, 'failed');
    expect(runs).toBeGreaterThan(1); // parked within its window
    expect(await p.eventsOf(jobId, 'job.failed')).toHaveLength(1);

    const before = runs;
    const rerunAt = Date.now();
    expect((await request()).jobId).toBe(jobId);
    await p.waitForJobState(jobId, 'failed');
    expect(runs - before).toBeGreaterThan(1); // parked again: its window counts from the repeat
    expect((await p.queues.getJob(jobId))!.finishedOn! - rerunAt).toBeGreaterThanOrEqual(WINDOW_MS / 2);
    await p.waitForEvent('job.failed', jobId);
    expect(await p.eventsOf(jobId, 'job.failed')).toHaveLength(2);

    down = false;
    await request();
    await p.waitForJobState(jobId, 'completed');
    expect((await ram.stat('doc')).size).toBe(5);
  });
});
