/**
 * A worker process's own `/metrics` (WORKER_METRICS_PORT): in a split deployment the store operations of jobs run
 * there, where the web process's registry never sees them.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiMetrics } from '../../src/metrics.js';
import { loadConfig } from '../../src/config.js';
import { createQueues, type JobQueues } from '../../src/jobs/queue.js';
import { closeRedis, createRedis, whenReady, type RedisConnection } from '../../src/redis.js';
import { serveMetrics, type MetricsServer } from '../../src/workers/metrics-server.js';
import { startWorkerProcess, type WorkerProcess } from '../../src/workers/process.js';
import { deleteKeys, TEST_REDIS_URL, uniquePrefix } from '../support/redis.js';
import { inlineBody, quietLog, waitFor } from './fixtures/pipeline.js';

describe("a worker process's /metrics", () => {
  let root: string;
  let worker: WorkerProcess;
  let server: MetricsServer;
  let producer: RedisConnection;
  let queues: JobQueues;
  const prefix = uniquePrefix('worker-metrics');

  beforeAll(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'kyozo-worker-metrics-'));
    const config = loadConfig({ REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: prefix, STORAGE_ROOT_DIR: root, STORES: 'mem:ram', WORKER_METRICS_PORT: '0' });
    const metrics = new ApiMetrics();
    worker = await startWorkerProcess({ config, log: quietLog, metrics, schedules: false });
    server = await serveMetrics(metrics, config.workers.metricsPort!, config, quietLog);
    producer = createRedis(config, 'producer');
    await whenReady(producer);
    queues = createQueues({ connection: producer, prefix, attempts: 1 });
  });

  afterAll(async () => {
    await server?.close();
    await worker?.shutdown();
    await queues?.close();
    if (producer) {
      await deleteKeys(producer, prefix);
      await closeRedis(producer);
    }
    await rm(root, { recursive: true, force: true });
  });

  it('counts the writes its jobs make and its queues, and serves nothing else', async () => {
    const { jobId } = await queues.enqueue('write', { store: 'mem', key: 'measured', body: inlineBody('x') });
    await waitFor(async () => (await queues.getJob(jobId))?.finishedOn !== undefined, { what: 'the write job finished' });
    const text = await (await fetch(server.url)).text();
    expect(text).toMatch(/kyozo_provider_op_duration_seconds_count\{store="mem",op="write",outcome="ok"\} 1/);
    expect(text).toMatch(/kyozo_queue_jobs\{queue="objects",state="completed"\} 1/);
    expect((await fetch(server.url.replace('/metrics', '/other'))).status).toBe(404);
  });
});
