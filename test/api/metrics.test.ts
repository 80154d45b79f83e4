/** The registry behind `/metrics`: queue counts read at scrape time, from a Redis that may not answer. */
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { ApiMetrics, queueReading, workerCount } from '../../src/metrics.js';
import { redisServerUnavailableReason, startRedisServer } from '../cluster/redis-server.js';

const noRedisServer = redisServerUnavailableReason();
if (noRedisServer !== undefined) console.warn(`metrics: the test of a Redis without CLIENT skipped: ${noRedisServer}`);

const queueSeries = (text: string) => text.split('\n').filter((line) => line.startsWith('kyozo_queue_jobs{'));

describe('the /metrics registry', () => {
  it('a queue whose counts do not come leaves out only its own series, and the scrape answers in about a second', async () => {
    const metrics = new ApiMetrics();
    metrics.watchQueues(() => [
      { name: 'answers', counts: async () => ({ waiting: 3, active: 1 }), workers: async () => 2 },
      { name: 'hangs', counts: () => new Promise(() => undefined), workers: () => new Promise(() => undefined) },
    ]);
    const started = Date.now();
    const text = await metrics.registry.metrics();
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(queueSeries(text)).toEqual(['kyozo_queue_jobs{queue="answers",state="waiting"} 3', 'kyozo_queue_jobs{queue="answers",state="active"} 1']);
    expect(text.split('\n').filter((line) => line.startsWith('kyozo_queue_workers{'))).toEqual(['kyozo_queue_workers{queue="answers"} 2']);
  });

  it('scrapes at the same time each get every series', async () => {
    const metrics = new ApiMetrics();
    const names = Array.from({ length: 7 }, (_, i) => `queue-${i}`);
    metrics.watchQueues(() =>
      names.map((name) => ({
        name,
        counts: () => new Promise<Record<string, number>>((resolve) => setTimeout(() => resolve({ waiting: 1, failed: 0 }), Math.random() * 5)),
        workers: async () => 1,
      })),
    );
    // Started a millisecond apart: each begins while others are half-way through reading their counts.
    const started: Promise<string>[] = [];
    for (let i = 0; i < 40; i++) {
      started.push(metrics.registry.metrics());
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    const scrapes = await Promise.all(started);
    for (const text of scrapes) expect(queueSeries(text)).toHaveLength(names.length * 2);
  });

  it.skipIf(noRedisServer !== undefined)('a Redis that refuses CLIENT LIST leaves the worker count out, not one worker', async () => {
    const server = await startRedisServer(['--rename-command', 'CLIENT', '']);
    const connection = new Redis(server.url, { maxRetriesPerRequest: null });
    const queue = new Queue('no-client-list', { connection, prefix: 'metrics-test' });
    try {
      expect(await workerCount(queue)).toBeUndefined();
      const metrics = new ApiMetrics();
      metrics.watchQueues(() => [queueReading(queue)]);
      const text = await metrics.registry.metrics();
      expect(text.split('\n').filter((line) => line.startsWith('kyozo_queue_workers{'))).toEqual([]);
      expect(queueSeries(text).length).toBeGreaterThan(0); // the job counts still come
    } finally {
      await queue.close();
      connection.disconnect();
      await server.stop();
    }
  });
});
