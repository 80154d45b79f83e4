/**
 * /metrics as an operator reads it: the documented metrics exist with their labels, and move when they should —
 * provider errors by code, HTTP answers by status (including those refused before routing), queue counts by state
 * (webhook queues included) on the web process and on a worker's own /metrics.
 */
import { connect } from 'node:net';
import { Queue, Worker } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiMetrics } from '../../src/metrics.js';
import { loadConfig } from '../../src/config.js';
import { webhookQueueName } from '../../src/events/webhook-dispatcher.js';
import { ProviderUnavailableError } from '../../src/providers/errors.js';
import { closeRedis, createRedis } from '../../src/redis.js';
import { serveMetrics } from '../../src/workers/metrics-server.js';
import { startWorkerProcess } from '../../src/workers/process.js';
import { deleteKeys, TEST_REDIS_URL, uniquePrefix } from '../support/redis.js';
import { LogCapture, sleep, startObsService, type ObsService } from './support.js';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

const TOKEN = 'review-obs-token-0123456789';
const auth = { Authorization: `Bearer ${TOKEN}` };
const HOOK = 'http://127.0.0.1:9/hooks/s3cr3t-path-token';
let service: ObsService;
let base: string;

beforeAll(async () => {
  service = await startObsService('obs-metrics', { API_TOKENS: TOKEN, WEBHOOK_URLS: HOOK }, { worker: false });
  base = service.server!.url;
});
afterAll(async () => {
  await service?.close();
});

const scrape = async () => (await fetch(`${base}/metrics`)).text();
/** The value of one series (0 when absent). */
function value(text: string, name: string, labels: Record<string, string>): number {
  const want = Object.entries(labels);
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const body = line.slice(name.length + 1, line.lastIndexOf('}'));
    const got = Object.fromEntries([...body.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (want.every(([k, v]) => got[k] === v)) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return 0;
}

/** Sends raw bytes, returns the status line's code and the X-Request-Id. */
function raw(bytes: string): Promise<{ status: number; requestId?: string }> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(url.port), url.hostname);
    let answer = '';
    socket.on('data', (d) => (answer += d.toString('latin1')));
    socket.on('error', reject);
    socket.on('close', () =>
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0), requestId: /x-request-id: ([^\r\n]+)/i.exec(answer)?.[1] }),
    );
    socket.write(bytes);
  });
}

describe('the documented series', () => {
  it('exist with their documented labels', async () => {
    await fetch(`${base}/v1/stores/mem/objects/exists`, { method: 'PUT', body: 'x', headers: auth }); // no worker: 202
    await fetch(`${base}/v1/stores/mem/objects/nothing-here`, { headers: auth });
    const text = await scrape();
    for (const [name, labels] of [
      ['kyozo_http_request_duration_seconds', 'method,route,status'],
      ['kyozo_provider_op_duration_seconds', 'store,op,outcome'],
      ['kyozo_provider_errors_total', 'store,op,code'],
      ['kyozo_queue_jobs', 'queue,state'],
      ['kyozo_queue_workers', 'queue'],
    ] as const) {
      const line = text.split('\n').find((l) => l.startsWith(`${name}{`) || l.startsWith(`${name}_count{`));
      expect(line, name).toBeDefined();
      const names = [...line!.matchAll(/(\w+)="/g)].map((m) => m[1]).filter((n) => n !== 'le');
      expect(names.sort().join(','), name).toBe(labels.split(',').sort().join(','));
    }
  });
});

describe('provider errors', () => {
  it('a missing object counts NOT_FOUND; a failure outside the contract UNKNOWN (500); an unavailable store PROVIDER_UNAVAILABLE (503)', async () => {
    const before = await scrape();
    expect((await fetch(`${base}/v1/stores/mem/objects/missing/a`, { headers: auth })).status).toBe(404);
    const mem = service.deps.stores.get('mem')! as unknown as Record<string, unknown>;
    const original = mem.read;
    const provider = service.deps.stores.get('mem')!;
    await provider.write('boom', Buffer.from('x'));
    await provider.write('away', Buffer.from('x'));
    try {
      mem.read = async () => {
        throw new Error('disk on fire');
      };
      expect((await fetch(`${base}/v1/stores/mem/objects/boom`, { headers: auth })).status).toBe(500);
      mem.read = async () => {
        throw new ProviderUnavailableError('backend away');
      };
      expect((await fetch(`${base}/v1/stores/mem/objects/away`, { headers: auth })).status).toBe(503);
    } finally {
      mem.read = original;
    }
    const after = await scrape();
    const diff = (labels: Record<string, string>) => value(after, 'kyozo_provider_errors_total', labels) - value(before, 'kyozo_provider_errors_total', labels);
    const readOrStat = (code: string) => diff({ store: 'mem', op: 'read', code }) + diff({ store: 'mem', op: 'stat', code });
    expect(readOrStat('NOT_FOUND')).toBeGreaterThanOrEqual(1);
    expect(diff({ store: 'mem', op: 'read', code: 'UNKNOWN' })).toBe(1);
    expect(diff({ store: 'mem', op: 'read', code: 'PROVIDER_UNAVAILABLE' })).toBe(1);
    const status = (s: string) => value(after, 'kyozo_http_request_duration_seconds_count', { route: '/v1/stores/:store/objects/*', status: s, method: 'GET' });
    expect(status('500')).toBeGreaterThanOrEqual(1);
    expect(status('503')).toBeGreaterThanOrEqual(1);
  });
});

describe('HTTP answers by status', () => {
  it('401, 404, 405 and 400 of the app land in the request histogram', async () => {
    const before = await scrape();
    expect((await fetch(`${base}/v1/stores`)).status).toBe(401);
    expect((await fetch(`${base}/no/such/route`, { headers: auth })).status).toBe(404);
    expect((await fetch(`${base}/health`, { method: 'DELETE' })).status).toBe(405);
    expect((await fetch(`${base}/v1/stores/mem/objects?limit=banana`, { headers: auth })).status).toBe(400);
    const after = await scrape();
    const total = (t: string, s: string) =>
      t
        .split('\n')
        .filter((l) => l.startsWith('kyozo_http_request_duration_seconds_count{') && l.includes(`status="${s}"`))
        .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
    for (const s of ['401', '404', '405', '400']) expect(total(after, s) - total(before, s), s).toBeGreaterThanOrEqual(1);
  });

  it('answers refused before routing (431 headers too large, 400 backslash / bad request line) are counted too', async () => {
    const total = (t: string, s: string) =>
      t
        .split('\n')
        .filter((l) => l.startsWith('kyozo_http_request_duration_seconds_count{') && l.includes(`status="${s}"`))
        .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
    const before = await scrape();
    const big = await raw(`GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(big.status).toBe(431);
    const backslash = await raw(`GET /v1/stores/mem/objects/a\\b HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKEN}\r\nConnection: close\r\n\r\n`);
    expect(backslash.status).toBe(400);
    const garbage = await raw(`GET /\x01 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    expect(garbage.status).toBe(400);
    const after = await scrape();
    expect.soft(total(after, '431') - total(before, '431'), '431 counted').toBe(1);
    expect.soft(total(after, '400') - total(before, '400'), '400s counted').toBe(2);
  });
});

describe('queue counts by state', () => {
  it('waiting, active, delayed, failed and completed are each right, and webhook queues are counted', async () => {
    const queue = service.deps.queues.all().find((q) => q.name === 'maintenance')!;
    const connection = createRedis(service.config, 'worker');
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const worker = new Worker(
      'maintenance',
      async (job) => {
        if (job.name === 'review-fail') throw new Error('planned');
        if (job.name === 'review-hold') await held;
        return 'ok';
      },
      { connection, prefix: service.config.queuePrefix, concurrency: 1, autorun: true },
    );
    try {
      await queue.add('review-ok', {}, { jobId: 'review-ok' });
      await queue.add('review-fail', {}, { jobId: 'review-fail', attempts: 1 });
      await queue.add('review-hold', {}, { jobId: 'review-hold' });
      for (let i = 0; i < 50 && (await queue.getJobCounts('active')).active !== 1; i++) await sleep(100);
      await queue.add('review-wait', {}, { jobId: 'review-wait' });
      await queue.add('review-delayed', {}, { jobId: 'review-delayed', delay: 600_000 });
      const hookQueue = service.deps.extraQueues!.find((q) => q.name === webhookQueueName(HOOK))!;
      await hookQueue.add('delivery', { url: HOOK }, { jobId: 'hook-1' });
      await hookQueue.add('delivery', { url: HOOK }, { jobId: 'hook-2', delay: 600_000 });
      const text = await scrape();
      const q = (state: string) => value(text, 'kyozo_queue_jobs', { queue: 'maintenance', state });
      expect({ waiting: q('waiting'), active: q('active'), delayed: q('delayed'), failed: q('failed'), completed: q('completed') }).toEqual({
        waiting: 1,
        active: 1,
        delayed: 1,
        failed: 1,
        completed: 1,
      });
      const hook = (state: string) => value(text, 'kyozo_queue_jobs', { queue: webhookQueueName(HOOK), state });
      expect({ waiting: hook('waiting'), delayed: hook('delayed') }).toEqual({ waiting: 1, delayed: 1 });
      expect(value(text, 'kyozo_queue_workers', { queue: 'maintenance' })).toBe(1);
      // The webhook URL's secret path never becomes a label.
      expect(text).not.toContain('s3cr3t');
    } finally {
      release();
      await worker.close();
      await closeRedis(connection);
    }
  });
});

describe("a worker process's own /metrics", () => {
  it('counts the webhook delivery queues too, as the web /metrics does (the worker is what drains them)', async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'kyozo-obs-wm-'));
    const prefix = uniquePrefix('obs-wm');
    const config = loadConfig({ REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: prefix, STORAGE_ROOT_DIR: root, STORES: 'mem:ram', WORKER_METRICS_PORT: '0', WEBHOOK_URLS: HOOK });
    const metrics = new ApiMetrics();
    const capture = new LogCapture();
    const worker = await startWorkerProcess({ config, log: capture.log, metrics, schedules: false });
    const server = await serveMetrics(metrics, 0, config, capture.log);
    const producer = createRedis(config, 'worker');
    const hookQueue = new Queue(webhookQueueName(HOOK), { connection: producer, prefix });
    try {
      await hookQueue.add('delivery', { url: HOOK }, { jobId: 'wm-hook', delay: 600_000 });
      const text = await (await fetch(server.url)).text();
      expect(text).toMatch(/kyozo_queue_jobs\{queue="objects",state="waiting"\} 0/);
      expect(value(text, 'kyozo_queue_jobs', { queue: webhookQueueName(HOOK), state: 'delayed' }), 'webhook queue on the worker /metrics').toBe(1);
    } finally {
      await hookQueue.close();
      await server.close();
      await worker.shutdown();
      await deleteKeys(producer, prefix);
      await closeRedis(producer);
      await rm(root, { recursive: true, force: true });
    }
  });
});
