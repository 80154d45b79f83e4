/**
 * `npm start` (web and worker in one process, sharing the stores) with a hybrid store whose cold tier and Redis are
 * both down: a read of an object that only cold and backup hold cannot tell whether backup is current (the pending
 * ledger lives in Redis), so it is answered 503 with Retry-After at once, as the web process answers it, not held
 * until Redis comes back.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uniquePrefix } from '../support/redis.js';
import { s3ServiceEnv, startS3, type S3TestEndpoint } from '../support/s3.js';
import { freePort, serviceProcess, startRedisServer, tempDir, type RedisServer, type ServiceProcess } from './fixtures/processes.js';

let s3: S3TestEndpoint;
let redis: RedisServer;
let service: ServiceProcess | undefined;
let base: string;

beforeAll(async () => {
  s3 = await startS3();
  if (!s3.canStop) return;
  redis = await startRedisServer('embedded-outage');
  const bucket = await s3.createBucket();
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  service = serviceProcess('embedded', {
    ...s3ServiceEnv(s3, bucket),
    REDIS_URL: redis.url,
    QUEUE_PREFIX: uniquePrefix('embedded-outage'),
    STORAGE_ROOT_DIR: await tempDir('embedded-outage'),
    PORT: String(port),
    API_TOKENS: '',
    STORES: 'hy:hybrid',
    HY_S3_BUCKET: bucket,
    DISK_FSYNC: 'false',
  });
  await service.start();
}, 120_000);

afterAll(async () => {
  await service?.kill();
  await redis?.close();
  await s3?.close();
});

describe('npm start, hybrid store, cold tier and Redis down', () => {
  it('answers a read from backup 503 with Retry-After at once, and serves it again once both are back', async (context) => {
    if (!s3.canStop) context.skip(`the ${s3.kind} endpoint cannot be stopped by tests`);
    const put = await fetch(`${base}/v1/stores/hy/objects/doc?wait=true`, { method: 'PUT', body: 'kept in cold and backup' });
    expect(put.status).toBe(200);
    expect(await (await fetch(`${base}/v1/stores/hy/objects/doc`)).text()).toBe('kept in cold and backup');

    await s3.stop();
    await redis.kill();
    const started = Date.now();
    const during = await fetch(`${base}/v1/stores/hy/objects/doc`, { signal: AbortSignal.timeout(15_000) });
    const waitedMs = Date.now() - started;
    expect(during.status).toBe(503);
    expect(during.headers.get('retry-after')).not.toBeNull();
    expect(((await during.json()) as { error: { code: string } }).error.code).toBe('PROVIDER_UNAVAILABLE');
    expect(waitedMs).toBeLessThan(10_000);

    await redis.start();
    await s3.start();
    // The breaker around cold lets a probe through after its half-open delay.
    let after: Response | undefined;
    for (let i = 0; i < 100 && after?.status !== 200; i++) {
      after = await fetch(`${base}/v1/stores/hy/objects/doc`);
      if (after.status !== 200) await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect(after?.status).toBe(200);
    expect(await after!.text()).toBe('kept in cold and backup');
  }, 90_000);
});
