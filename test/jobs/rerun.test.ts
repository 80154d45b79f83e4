/**
 * A job that runs again after an earlier run got as far as its event — its worker lost the job's lock (a stall) or
 * died before the completion — answers with the earlier run's result instead of doing the work again: another job
 * may have changed the same key in between.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../../src/providers/body.js';
import { RamProvider } from '../../src/providers/ram.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { interceptMethod } from '../support/intercept.js';
import { inlineBody, startPipeline, type Pipeline } from './fixtures/pipeline.js';

const store = new RamProvider({ maxBytes: 1024 * 1024 });
let p: Pipeline;
/** Called after each write the worker makes, with the key written. */
let afterWrite: (key: string) => Promise<void> = async () => {};

beforeAll(async () => {
  const watched: StorageProvider = interceptMethod(store, 'write', (write) => async (key, body, opts) => {
    const info = await write(key, body, opts);
    await afterWrite(key);
    return info;
  });
  p = await startPipeline('jobs-rerun', { stores: new Map([['main', watched]]) });
});

afterAll(async () => {
  await p?.close();
});

describe('a job run again after its event', () => {
  it('answers with the earlier result and leaves a newer write of the same key in place', async () => {
    const { jobId } = await p.queues.enqueue('write', { store: 'main', key: 'doc', body: inlineBody('A') });
    const lockKey = `${p.prefix}:objects:${jobId}:lock`;
    let runs = 0;
    afterWrite = async (key) => {
      if (key !== 'doc' || runs++ > 0) return;
      // The first run loses its lock (its completion will be refused, and the job runs again once found stalled),
      // and another writer replaces the object meanwhile.
      await p.redis.worker.del(lockKey);
      await store.write('doc', 'B');
    };
    await p.startWorkers({ lockDurationMs: 1_000, stalledIntervalMs: 300 });
    await p.waitForJobState(jobId, 'completed');

    const job = await p.queues.getJob(jobId);
    expect(job!.attemptsStarted).toBeGreaterThan(1);
    expect((job!.returnvalue as { etag: string }).etag).toBe(sha256Hex('A'));
    expect((await store.stat('doc')).etag).toBe(sha256Hex('B'));
    expect(runs).toBe(1);
    expect(await p.eventsOf(jobId, 'object.written')).toHaveLength(1);
  });
});
