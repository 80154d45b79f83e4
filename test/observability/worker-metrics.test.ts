/**
 * A worker process's own /metrics (WORKER_METRICS_PORT): its store errors counted by code, nothing but GET /metrics
 * answered (random paths and methods add no series), and a scrape bounded while Redis accepts and never answers.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { METHODS, request as httpRequest } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiMetrics } from '../../src/metrics.js';
import { loadConfig } from '../../src/config.js';
import { createQueues, type JobQueues } from '../../src/jobs/queue.js';
import { closeRedis, createRedis, whenReady, type RedisConnection } from '../../src/redis.js';
import { serveMetrics, type MetricsServer } from '../../src/workers/metrics-server.js';
import { startWorkerProcess, type WorkerProcess } from '../../src/workers/process.js';
import { inlineBody, waitFor } from '../jobs/fixtures/pipeline.js';
import { deleteKeys, TEST_REDIS_URL, uniquePrefix } from '../support/redis.js';
import { blackHoleProxy, LogCapture, seriesOf } from './support.js';

const redisPort = Number(new URL(TEST_REDIS_URL).port || 6379);
let proxy: Awaited<ReturnType<typeof blackHoleProxy>>;
let root: string;
let worker: WorkerProcess;
let server: MetricsServer;
let producer: RedisConnection;
let queues: JobQueues;
const prefix = uniquePrefix('obs-wmetrics');

beforeAll(async () => {
  proxy = await blackHoleProxy(redisPort);
  root = await mkdtemp(path.join(os.tmpdir(), 'kyozo-obs-wmetrics-'));
  const config = loadConfig({ REDIS_URL: `redis://127.0.0.1:${proxy.port}`, QUEUE_PREFIX: prefix, STORAGE_ROOT_DIR: root, STORES: 'mem:ram', WORKER_METRICS_PORT: '0', JOB_ATTEMPTS: '1' });
  const metrics = new ApiMetrics();
  const capture = new LogCapture();
  worker = await startWorkerProcess({ config, log: capture.log, metrics, schedules: false });
  server = await serveMetrics(metrics, 0, config, capture.log);
  producer = createRedis({ ...config, redis: { ...config.redis, url: TEST_REDIS_URL } }, 'producer');
  await whenReady(producer);
  queues = createQueues({ connection: producer, prefix, attempts: 1 });
});

afterAll(async () => {
  proxy.setHang(false);
  proxy.setDown(true);
  await server?.close();
  await worker?.shutdown().catch(() => undefined);
  await queues?.close();
  await deleteKeys(producer, prefix).catch(() => undefined);
  await closeRedis(producer);
  await proxy.close();
  await rm(root, { recursive: true, force: true });
});

describe("a worker's /metrics", () => {
  it('counts a failed write of a job by its error code', async () => {
    const { jobId } = await queues.enqueue('write', { store: 'mem', key: 'k', body: inlineBody('x'), ifMatch: '"nope"' } as never);
    await waitFor(async () => (await queues.getJob(jobId))?.finishedOn !== undefined, { what: 'job done' });
    const text = await (await fetch(server.url)).text();
    expect(text).toMatch(/kyozo_provider_errors_total\{store="mem",op="write",code="PRECONDITION_FAILED"\} 1/);
  });

  it('random paths and methods get 404 and add no series', async () => {
    const before = seriesOf(await (await fetch(server.url)).text()).filter((l) => l.startsWith('kyozo_') && !l.startsWith('kyozo_process') && !l.startsWith('kyozo_nodejs')).length;
    const methods = METHODS.filter((m) => m !== 'CONNECT');
    const statuses = new Set<number>();
    await Promise.all(
      Array.from({ length: 500 }, () => {
        const method = methods[Math.floor(Math.random() * methods.length)]!;
        return new Promise<void>((resolve) => {
          const req = httpRequest(server.url.replace('/metrics', `/${randomBytes(4).toString('hex')}`), { method, agent: false }, (res) => {
            statuses.add(res.statusCode!);
            res.resume().on('end', resolve);
          });
          req.on('error', () => resolve());
          req.end();
        });
      }),
    );
    expect([...statuses]).toEqual([404]);
    const after = seriesOf(await (await fetch(server.url)).text()).filter((l) => l.startsWith('kyozo_') && !l.startsWith('kyozo_process') && !l.startsWith('kyozo_nodejs')).length;
    expect(after).toBe(before);
  });

  it('a scrape answers within 3 s while Redis accepts and never answers', async () => {
    proxy.setHang(true);
    try {
      for (let i = 0; i < 3; i++) {
        const started = Date.now();
        const response = await fetch(server.url, { signal: AbortSignal.timeout(20_000) });
        const text = await response.text();
        expect(response.status).toBe(200);
        expect(Date.now() - started).toBeLessThan(3_000);
        expect(text).not.toMatch(/kyozo_queue_jobs\{/); // left out, not stale
      }
    } finally {
      proxy.setHang(false);
    }
  });
});
