/**
 * Regression test for a defect the crash tests found: BullMQ fails a job for good once it has stalled more than
 * `maxStalledCount` times, and the worker used 1. A write whose job was in a worker's hands when that worker was
 * SIGKILLed, and again when its successor was, ended `failed` ("job stalled more than allowable limit") although
 * its client got a 202. The worker now allows `JOB_ATTEMPTS` stalls: a job that kills every worker still ends,
 * two unrelated crashes cannot lose it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_REDIS_URL, uniquePrefix } from '../support/redis.js';
import { startDeployment, waitUntil, type Deployment, type QueueProbe, type ServiceProcess } from './fixtures/processes.js';

const prefix = uniquePrefix('rel-stalled');
let deployment: Deployment | undefined;
let worker: ServiceProcess;
let probe: QueueProbe;
let base: string;

beforeAll(async () => {
  deployment = await startDeployment({
    label: 'stalled-root',
    redisUrl: TEST_REDIS_URL,
    prefix,
    env: { STORES: 'files:disk', DISK_FSYNC: 'false' },
    // Every write takes 4 s, so the job is surely in hand at each kill; the production maxStalledCount applies.
    workerEnv: { KYOZO_TEST_WRITE_DELAY_MS: '4000' },
  });
  ({ worker, probe, base } = deployment);
}, 120_000);

afterAll(async () => {
  await deployment?.close();
});

describe('a job in hand during two worker crashes', () => {
  it('still completes: the write it was accepted for is not lost', async () => {
    const put = await fetch(`${base}/v1/stores/files/objects/stalled/twice`, { method: 'PUT', body: 'accepted once' });
    expect(put.status).toBe(202);
    const { jobId } = (await put.json()) as { jobId: string };

    for (let crash = 1; crash <= 2; crash++) {
      // Active again after the previous crash means recovered (stalled once more) and picked up by the new worker.
      await waitUntil(
        async () => {
          const job = await probe.job(jobId);
          return job?.state === 'active' && job.stalledCounter >= crash - 1;
        },
        { timeoutMs: 30_000, intervalMs: 20, what: `job in hand before crash ${crash}` },
      );
      await worker.kill();
      await worker.start();
    }

    const finished = await waitUntil(
      async () => {
        const job = await probe.job(jobId);
        return job?.state === 'completed' || job?.state === 'failed' ? job : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 100, what: 'the job to finish' },
    );
    expect(finished.failedReason).toBeUndefined();
    expect(finished.state).toBe('completed');
    const get = await fetch(`${base}/v1/stores/files/objects/stalled/twice`);
    expect(await get.text()).toBe('accepted once');
  }, 120_000);
});
