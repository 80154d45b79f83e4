/** The worker's job context against a real Redis: the journal lives in the job's own hash, and only there. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Job } from 'bullmq';
import { WorkerJobContext, type JobContextDeps } from '../../src/workers/job-context.js';
import { redisFixture, type RedisFixture } from '../support/redis.js';

describe('the job journal', () => {
  let redis: RedisFixture;
  const job = { id: 'objects-journal', name: 'write', timestamp: Date.now(), attemptsStarted: 1, progress: 0 } as unknown as Job;
  const context = (hashKey: string) => new WorkerJobContext(job, hashKey, { connection: redis.worker } as JobContextDeps, undefined);

  beforeAll(async () => {
    redis = await redisFixture('job-context');
  });

  afterAll(async () => {
    await redis?.cleanup();
  });

  it('notes a result in the job\'s hash, and a retry reads it back', async () => {
    const hashKey = `${redis.prefix}:objects:journal`;
    await redis.worker.hset(hashKey, 'name', 'write');
    await context(hashKey).journal.remember({ etag: 'e' });
    expect(await context(hashKey).journal.recall()).toEqual({ etag: 'e' });
  });

  it('makes no hash for a job that is gone (a run that outlived its job leaves no stray key)', async () => {
    const hashKey = `${redis.prefix}:objects:removed`;
    await context(hashKey).journal.remember({ etag: 'e' });
    expect(await redis.worker.exists(hashKey)).toBe(0);
  });
});
