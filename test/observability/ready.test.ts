/**
 * /ready as a load balancer and an operator rely on it: 503 when Redis or a store is down, 200 otherwise; bounded
 * time when Redis or S3 accepts connections and never answers; nothing secret in its body.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_REDIS_URL } from '../support/redis.js';
import { s3ServiceEnv, startS3, type S3TestEndpoint } from '../support/s3.js';
import { blackHoleProxy, silentServer, sleep, startObsService } from './support.js';

const TOKEN = 'review-obs-token-0123456789';
const auth = { Authorization: `Bearer ${TOKEN}` };
const redisPort = Number(new URL(TEST_REDIS_URL).port || 6379);

async function timed(url: string, init?: RequestInit): Promise<{ status: number; ms: number; body: string }> {
  const started = Date.now();
  const response = await fetch(url, { ...init, signal: AbortSignal.timeout(30_000) });
  const body = await response.text();
  return { status: response.status, ms: Date.now() - started, body };
}

describe('/ready with Redis', () => {
  it('503 when Redis refuses, 200 when back; bounded (≤ 5 s) when Redis accepts and never answers, /metrics too', async () => {
    const proxy = await blackHoleProxy(redisPort);
    const service = await startObsService('obs-ready-redis', { API_TOKENS: TOKEN }, { worker: false, redisUrl: `redis://127.0.0.1:${proxy.port}` });
    const base = service.server!.url;
    try {
      expect((await timed(`${base}/ready`)).status).toBe(200);
      proxy.setDown(true);
      await sleep(200);
      const down = await timed(`${base}/ready`, { headers: auth });
      expect(down.status).toBe(503);
      expect(JSON.parse(down.body).redis.status).toBe('down');
      proxy.setDown(false);
      let back = 0;
      for (let i = 0; i < 60 && back !== 200; i++) {
        await sleep(250);
        back = (await timed(`${base}/ready`)).status;
      }
      expect(back).toBe(200);

      proxy.setHang(true);
      const hung = await timed(`${base}/ready`, { headers: auth });
      expect(hung.status).toBe(503);
      expect(hung.ms).toBeLessThan(5_000);
      const metrics = await timed(`${base}/metrics`);
      expect(metrics.status).toBe(200);
      expect(metrics.ms).toBeLessThan(5_000);
      const health = await timed(`${base}/health`);
      expect(health.status).toBe(200);
      expect(health.ms).toBeLessThan(1_000);
      // Probes every second for 10 s while Redis hangs: each bounded.
      const times: number[] = [];
      for (let i = 0; i < 5; i++) times.push((await timed(`${base}/ready`)).ms);
      expect(Math.max(...times)).toBeLessThan(5_000);
    } finally {
      proxy.setHang(false);
      proxy.setDown(true);
      await service.close().catch(() => undefined);
      await proxy.close();
    }
  }, 120_000);
});

describe('/ready with S3', () => {
  let s3: S3TestEndpoint;
  beforeAll(async () => {
    s3 = await startS3();
    // The service's s3 client takes its credentials from the SDK chain (the environment), as in production.
    process.env.AWS_ACCESS_KEY_ID = s3.credentials.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = s3.credentials.secretAccessKey;
  }, 120_000);
  afterAll(async () => {
    await s3?.close();
  });

  it('S3 stopped: 503 naming the s3 store, provider errors counted PROVIDER_UNAVAILABLE; back: 200; no credential in the body', async (context) => {
    if (!s3.canStop) context.skip('endpoint cannot be stopped');
    const bucket = await s3.createBucket();
    const service = await startObsService(
      'obs-ready-s3',
      { API_TOKENS: TOKEN, STORES: 'media:s3,files:disk', S3_VERSIONING: 'explicit', ...s3ServiceEnv(s3, bucket) },
      { worker: false },
    );
    const base = service.server!.url;
    let stopped = false;
    try {
      const ok = await timed(`${base}/ready`, { headers: auth });
      expect(ok.status, ok.body).toBe(200);
      await s3.stop();
      stopped = true;
      const down = await timed(`${base}/ready`, { headers: auth });
      expect(down.status).toBe(503);
      expect(down.ms).toBeLessThan(5_000);
      const body = JSON.parse(down.body);
      expect(body.stores.media.status).toBe('down');
      expect(body.stores.files.status).toBe('ok');
      for (const secret of [s3.credentials.secretAccessKey, s3.credentials.accessKeyId, TOKEN]) expect(down.body).not.toContain(secret);
      expect((await fetch(`${base}/v1/stores/media/objects/x`, { headers: auth })).status).toBe(503);
      const metrics = await (await fetch(`${base}/metrics`)).text();
      expect(metrics).toMatch(/kyozo_provider_errors_total\{store="media",op="(read|stat)",code="PROVIDER_UNAVAILABLE"\} [1-9]/);
      await s3.start();
      stopped = false;
      let back = 0;
      for (let i = 0; i < 80 && back !== 200; i++) {
        await sleep(250);
        back = (await timed(`${base}/ready`)).status;
      }
      expect(back).toBe(200);
    } finally {
      if (stopped) await s3.start().catch(() => undefined);
      await service.close();
    }
  }, 120_000);

  it('S3 accepts and never answers: /ready 503 within 5 s, every time, and /metrics answers', async () => {
    const silent = await silentServer();
    const service = await startObsService(
      'obs-ready-s3hang',
      {
        API_TOKENS: TOKEN,
        STORES: 'media:s3,hy:hybrid,files:disk',
        S3_VERSIONING: 'explicit',
        S3_BUCKET: 'hung',
        HY_S3_BUCKET: 'hung-cold',
        S3_ENDPOINT: `http://127.0.0.1:${silent.port}`,
        S3_FORCE_PATH_STYLE: 'true',
      },
      { worker: false, processEnv: {} },
    );
    const base = service.server!.url;
    try {
      for (let i = 0; i < 3; i++) {
        const hung = await timed(`${base}/ready`, { headers: auth });
        expect(hung.status).toBe(503);
        expect(hung.ms).toBeLessThan(5_000);
        const body = JSON.parse(hung.body);
        expect(body.stores.media.status).toBe('down');
      }
      const metrics = await timed(`${base}/metrics`);
      expect(metrics.ms).toBeLessThan(5_000);
    } finally {
      await service.close();
      await silent.close();
    }
  }, 120_000);
});
