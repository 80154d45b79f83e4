/**
 * Regression test for a defect the torn-objects test found. A write job whose worker died after the provider
 * write and the release of its staged body, but before BullMQ marked it completed, is run again once its lock
 * lapses. The staged body is gone, and when a later write to the same key had replaced the object meanwhile, the
 * retry could not recognise its own work and failed for good with NOT_FOUND: a 202'd write that did happen was
 * reported failed, and a client retrying it would overwrite the newer content. Now the job notes its result in
 * its own hash (the job's journal) before it releases the body, and a retry answers from that note.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_REDIS_URL, uniquePrefix } from '../support/redis.js';
import { serviceProcess, startWeb, waitUntil, type QueueProbe, type ServiceProcess, type WebDeployment } from './fixtures/processes.js';

const prefix = uniquePrefix('rel-staged-retry');
let deployment: WebDeployment | undefined;
let base: string;
let probe: QueueProbe;
let env: Record<string, string>;
const workers: ServiceProcess[] = [];

beforeAll(async () => {
  deployment = await startWeb({
    label: 'staged-retry-root',
    redisUrl: TEST_REDIS_URL,
    prefix,
    env: { STORES: 'files:disk', DISK_FSYNC: 'false', STAGING_INLINE_MAX: '1024' },
  });
  ({ base, probe, env } = deployment);
}, 120_000);

afterAll(async () => {
  await deployment?.close(workers);
});

describe('a write job retried after its worker died between release and completion', () => {
  it('completes, and the newer write to the same key stays', async () => {
    // Its 15 s job lock keeps the first job from being recovered before the second write ran, however slowly
    // the successor starts on a busy machine.
    const dying = serviceProcess('worker-fast', { ...env, KYOZO_TEST_DIE_AFTER_RELEASE: '1', KYOZO_TEST_LOCK_MS: '15000' });
    workers.push(dying);
    await dying.start();
    const first = await fetch(`${base}/v1/stores/files/objects/shared/key`, { method: 'PUT', body: 'a'.repeat(4096) });
    expect(first.status).toBe(202);
    const { jobId } = (await first.json()) as { jobId: string };
    await waitUntil(() => !dying.running, { timeoutMs: 30_000, what: 'the worker to die after releasing the body' });

    const successor = serviceProcess('worker-fast', env);
    workers.push(successor);
    await successor.start();
    const second = await fetch(`${base}/v1/stores/files/objects/shared/key?wait=true`, { method: 'PUT', body: 'b'.repeat(4096) });
    expect(second.status).toBe(200);

    const finished = await waitUntil(
      async () => {
        const job = await probe.job(jobId);
        return job?.state === 'completed' || job?.state === 'failed' ? job : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 100, what: 'the first job to finish' },
    );
    expect(finished.failedReason).toBeUndefined();
    expect(finished.state).toBe('completed');
    expect(await (await fetch(`${base}/v1/stores/files/objects/shared/key`)).text()).toBe('b'.repeat(4096));
  }, 120_000);
});
