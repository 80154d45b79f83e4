/**
 * Regression test for a defect the outage test found: with the default JOB_ATTEMPTS (5) and the job backoff
 * (exponential from 1 s, up to 50 % jitter), a job's five attempts span about 7.5–15 s. While S3 is down, and for up
 * to the breaker's half-open delay (10 s) after it is back, the worker's circuit is open and every attempt fails
 * at once without touching S3: an s3 write accepted at the start of an outage of 25 s ended `failed`, a 202 whose
 * write never happened. Now a job whose attempts run out while its backend is unavailable is parked and retried
 * (backoff capped at a minute) for up to UNAVAILABLE_RETRY_SECONDS, and completes once S3 is back.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_REDIS_URL, uniquePrefix } from '../support/redis.js';
import { s3ServiceEnv, startS3, type S3TestEndpoint } from '../support/s3.js';
import { sleep, startDeployment, waitUntil, type Deployment, type QueueProbe, type ServiceProcess } from './fixtures/processes.js';

/** Longer than the longest default retry span (22.5 s), so the outcome does not depend on jitter. */
const OUTAGE_MS = 25_000;
const prefix = uniquePrefix('rel-budget');

let s3: S3TestEndpoint;
let deployment: Deployment | undefined;
let worker: ServiceProcess;
let probe: QueueProbe;
let base: string;

beforeAll(async () => {
  s3 = await startS3();
  if (!s3.canStop) return;
  const bucket = await s3.createBucket();
  deployment = await startDeployment({
    label: 'budget-root',
    redisUrl: TEST_REDIS_URL,
    prefix,
    env: { STORES: 'media:s3', ...s3ServiceEnv(s3, bucket) },
  });
  ({ worker, probe, base } = deployment);
}, 120_000);

afterAll(async () => {
  await deployment?.close();
  await s3?.close();
});

describe('default job retries against an S3 outage', () => {
  it('an s3 write accepted as the outage starts completes once S3 is back', async (context) => {
    if (!s3.canStop) context.skip(`the ${s3.kind} endpoint cannot be stopped by tests`);
    await s3.stop();
    const put = await fetch(`${base}/v1/stores/media/objects/accepted/at-outage`, { method: 'PUT', body: 'accepted during the outage' });
    expect(put.status).toBe(202);
    const { jobId } = (await put.json()) as { jobId: string };
    await sleep(OUTAGE_MS);
    await s3.start();

    const finished = await waitUntil(
      async () => {
        const job = await probe.job(jobId);
        return job?.state === 'completed' || job?.state === 'failed' ? job : undefined;
      },
      { timeoutMs: 90_000, intervalMs: 250, what: 'the job to finish' },
    );
    // failedReason keeps the last failed attempt's reason even once the job completed: the state is what counts.
    expect(finished.state, `${finished.failedReason}\n${worker.lines.slice(-10).join('\n')}`).toBe('completed');
    expect(await (await fetch(`${base}/v1/stores/media/objects/accepted/at-outage`)).text()).toBe('accepted during the outage');
  }, 180_000);
});
