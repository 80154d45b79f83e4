/**
 * Webhooks under a receiver that is behind (src/events/webhooks.ts, webhook-dispatcher.ts): what a receiver that
 * never answers costs in Redis (the dispatcher stops reading while the URL's queue is full: the stream holds the
 * place), and what the dispatcher says of events trimmed from the stream before it read them. Real Redis, a real
 * local HTTP receiver. Found by the session 19 review.
 */
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { createEventBus, type EventBus } from '../../src/events/bus.js';
import { startWebhooks, webhookQueueName, type Webhooks } from '../../src/events/webhooks.js';
import { redisFixture, type RedisFixture } from '../support/redis.js';
import { quietLog, waitFor } from './fixtures/pipeline.js';

interface Receiver {
  url(path: string): string;
  /** Requests answered 204, by path. */
  delivered: Map<string, string[]>;
  /** Requests held open, never answered. */
  hung: ServerResponse[];
  close(): Promise<void>;
}

async function receiver(hangPaths: string[] = []): Promise<Receiver> {
  const delivered = new Map<string, string[]>();
  const hung: ServerResponse[] = [];
  const server: Server = createServer((request, response) => {
    request.resume();
    request.on('end', () => {
      const path = request.url ?? '';
      if (hangPaths.includes(path)) return void hung.push(response);
      const ids = delivered.get(path) ?? [];
      ids.push(String(request.headers['x-kyozo-event-id']));
      delivered.set(path, ids);
      response.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: (path) => `${base}${path}`,
    delivered,
    hung,
    async close() {
      for (const response of hung) response.destroy();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

async function closedPortUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return `http://127.0.0.1:${port}/down`;
}

/** A pino logger whose records are kept. */
function capturingLog() {
  const records: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void records.push(JSON.parse(line) as Record<string, unknown>) });
  return { log, records };
}

async function emitMany(bus: EventBus, count: number, label: string): Promise<void> {
  const body = { key: 'x'.repeat(120) }; // an envelope of about 250 bytes, as an object.written of a longish key
  for (let start = 0; start < count; start += 500) {
    const batch = [];
    for (let i = start; i < Math.min(count, start + 500); i++) batch.push(bus.emit({ type: 'object.written', store: 'main', key: `${label}/${i}`, data: body }));
    await Promise.all(batch);
  }
}

/** Keys under `pattern` and their `MEMORY USAGE` (exact: SAMPLES 0). */
async function footprint(redis: Redis, pattern: string): Promise<{ keys: number; bytes: number }> {
  let cursor = '0';
  const keys: string[] = [];
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    keys.push(...found);
  } while (cursor !== '0');
  const pipeline = redis.pipeline();
  for (const key of keys) pipeline.call('MEMORY', 'USAGE', key, 'SAMPLES', '0');
  const replies = (await pipeline.exec()) ?? [];
  return { keys: keys.length, bytes: replies.reduce((sum, [, bytes]) => sum + Number(bytes ?? 0), 0) };
}

async function groupInfo(redis: Redis, streamKey: string, group: string): Promise<{ lag: number | null; pending: number; lastDeliveredId: string }> {
  const groups = (await redis.xinfo('GROUPS', streamKey)) as unknown[][];
  const fields = groups.find((g) => g[g.indexOf('name') + 1] === group)!;
  const field = (name: string) => fields[fields.indexOf(name) + 1];
  return { lag: field('lag') as number | null, pending: Number(field('pending')), lastDeliveredId: String(field('last-delivered-id')) };
}

describe('webhooks behind', () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    cleanups.length = 0;
  });

  it.each(['hangs', 'refuses'] as const)('a receiver that %s: its delivery queue does not grow without bound', async (receiverKind) => {
    const EVENTS = 5_000;
    /** The default `maxQueued`, plus one read's worth (a read of up to 100 entries may start just below it). */
    const HIGH_WATER = 1_000 + 100;
    const redis: RedisFixture = await redisFixture('webhooks-review-hang');
    const http = await receiver(['/hangs']);
    const bus = createEventBus({ redis: redis.worker, prefix: redis.prefix, maxLen: 100_000, log: quietLog });
    // 'hangs': accepts connections and never answers; 'refuses': down (nothing listens on the port).
    const url = receiverKind === 'hangs' ? http.url('/hangs') : await closedPortUrl();
    const webhooks: Webhooks = startWebhooks({
      connection: redis.worker,
      prefix: redis.prefix,
      streamKey: bus.streamKey,
      urls: [url],
      log: quietLog,
      blockMs: 200,
      timeoutMs: 120_000, // the hang outlasts the test: nothing completes, nothing fails
    });
    cleanups.push(() => redis.cleanup(), () => http.close(), () => bus.close(), () => webhooks.close(0));
    await webhooks.ready;
    const worker = redis.worker as Redis;
    const queueName = webhookQueueName(url);
    const queue = webhooks.queues.get(url)!;
    const before = await worker.dbsize();

    const started = Date.now();
    await emitMany(bus, EVENTS, 'hang');
    // The dispatcher reads 100 entries a batch: give it time to read all it will, or stop where it stops.
    let last = -1;
    let stableSince = Date.now();
    await waitFor(
      async () => {
        const { lag } = await groupInfo(worker, bus.streamKey, queueName);
        if (lag === 0) return true;
        const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized');
        const total = Object.values(counts).reduce((a, b) => a + b, 0);
        if (total !== last) [last, stableSince] = [total, Date.now()];
        return Date.now() - stableSince > 3_000;
      },
      { timeoutMs: 30_000, intervalMs: 100, what: 'the dispatcher done reading' },
    );
    const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'completed', 'failed');
    const queued = (counts.waiting ?? 0) + (counts.active ?? 0) + (counts.delayed ?? 0) + (counts.prioritized ?? 0);
    const jobs = await footprint(worker, `${redis.prefix}:${queueName}:*`);
    const stream = await footprint(worker, bus.streamKey);
    const group = await groupInfo(worker, bus.streamKey, queueName);
    const figures = {
      events: EVENTS,
      seconds: (Date.now() - started) / 1000,
      hungRequests: http.hung.length,
      counts,
      queueKeys: jobs.keys,
      queueBytes: jobs.bytes,
      queueBytesPerEvent: Math.round(jobs.bytes / EVENTS),
      streamBytes: stream.bytes,
      streamBytesPerEvent: Math.round(stream.bytes / EVENTS),
      groupLag: group.lag,
      dbsizeGrowth: (await worker.dbsize()) - before, // shared Redis: other suites' keys move this too
    };
    console.log(`receiver that ${receiverKind}:`, JSON.stringify(figures));

    // Every event still reaches the receiver eventually: either as a job or as an entry the group has not read.
    expect(queued + (group.lag ?? 0)).toBe(EVENTS);
    // Before session 19 the dispatcher turned every event into a job (body and all) however far behind the receiver was.
    expect(queued).toBeLessThanOrEqual(HIGH_WATER);
  });

  it('events trimmed from the stream before a URL\'s dispatcher read them are reported: a warning with how many were lost', async () => {
    const MAXLEN = 100;
    const EVENTS = 1_000;
    const redis: RedisFixture = await redisFixture('webhooks-review-trim');
    const http = await receiver();
    const bus = createEventBus({ redis: redis.worker, prefix: redis.prefix, maxLen: MAXLEN, log: quietLog });
    cleanups.push(() => redis.cleanup(), () => http.close(), () => bus.close());
    const url = http.url('/good');
    const worker = redis.worker as Redis;
    const options = { connection: redis.worker, prefix: redis.prefix, streamKey: bus.streamKey, urls: [url], blockMs: 200 };

    // The URL's group exists (a worker ran), then no worker runs while the events keep coming.
    const first = startWebhooks({ ...options, log: quietLog });
    await first.ready;
    await first.close();

    await emitMany(bus, EVENTS, 'trim');
    const length = await worker.xlen(bus.streamKey);
    expect(length).toBeLessThan(EVENTS); // XADD MAXLEN ~ trimmed whole nodes

    const { log, records } = capturingLog();
    const second = startWebhooks({ ...options, log });
    cleanups.push(() => second.close());
    await second.ready;
    await waitFor(async () => (await groupInfo(worker, bus.streamKey, webhookQueueName(url))).lag === 0, { what: 'the group read to the end' });
    await waitFor(() => (http.delivered.get('/good')?.length ?? 0) >= length, { what: 'what the stream held delivered' });
    const delivered = http.delivered.get('/good')!.length;
    const lost = EVENTS - delivered;
    const warnings = records.filter((record) => Number(record.level) >= 40);
    console.log('trimmed past the group:', JSON.stringify({ events: EVENTS, streamLength: length, delivered, lost, warnings: warnings.map((w) => w.msg) }));

    expect(lost).toBeGreaterThan(0);
    // Before session 19 nothing said so: the log now carries the count (as SSE gives a gap notice).
    expect(warnings.some((record) => Object.values(record).some((value) => value === lost))).toBe(true);
  });
  it('entries a dead consumer held, trimmed before they were claimed, are reported as lost', async () => {
    const redis: RedisFixture = await redisFixture('webhooks-review-claim');
    const http = await receiver();
    const bus = createEventBus({ redis: redis.worker, prefix: redis.prefix, maxLen: 100_000, log: quietLog });
    cleanups.push(() => redis.cleanup(), () => http.close(), () => bus.close());
    const url = http.url('/good');
    const group = webhookQueueName(url);
    const worker = redis.worker as Redis;
    const options = { connection: redis.worker, prefix: redis.prefix, streamKey: bus.streamKey, urls: [url], blockMs: 200 };
    const first = startWebhooks({ ...options, log: quietLog });
    await first.ready;
    await first.close();

    // A process read 50 events and died before it queued them; the stream is trimmed past them meanwhile.
    await emitMany(bus, 50, 'claim');
    await worker.xreadgroup('GROUP', group, 'died', 'COUNT', 50, 'STREAMS', bus.streamKey, '>');
    expect((await groupInfo(worker, bus.streamKey, group)).pending).toBe(50);
    await worker.xtrim(bus.streamKey, 'MAXLEN', 0);

    const { log, records } = capturingLog();
    const second = startWebhooks({ ...options, log, claimIdleMs: 100 });
    cleanups.push(() => second.close());
    await second.ready;
    await waitFor(async () => (await groupInfo(worker, bus.streamKey, group)).pending === 0, { what: 'the dead consumer\'s entries claimed' });
    // Redis drops them from the group as it answers the claim: the dispatcher logs once that answer has arrived.
    const lostWarning = () => records.some((record) => Number(record.level) >= 40 && record.lost === 50);
    await waitFor(lostWarning, { timeoutMs: 10_000, what: 'the loss logged' }).catch(() => undefined);
    const warnings = records.filter((record) => Number(record.level) >= 40);
    console.log('claimed after trim:', JSON.stringify({ pendingTrimmed: 50, delivered: http.delivered.get('/good')?.length ?? 0, warnings: warnings.map((w) => w.msg) }));
    // XAUTOCLAIM drops the trimmed ones from the pending list (its third reply): before session 19 nothing said so.
    expect(warnings.some((record) => Object.values(record).some((value) => value === 50))).toBe(true);
  });
  it('close() leaves no entry read from the stream but never queued (it would wait a claim period, 60 s, out of order)', async () => {
    const redis: RedisFixture = await redisFixture('webhooks-review-close');
    const http = await receiver();
    const bus = createEventBus({ redis: redis.worker, prefix: redis.prefix, maxLen: 100_000, log: quietLog });
    cleanups.push(() => redis.cleanup(), () => http.close(), () => bus.close());
    const url = http.url('/good');
    const group = webhookQueueName(url);
    const worker = redis.worker as Redis;
    let emitting = true;
    let emitted = 0;
    // Eight emitters side by side: a few thousand events a second, so that a read is often in flight at close().
    const emitter = Promise.all(
      Array.from({ length: 8 }, async () => {
        while (emitting) await bus.emit({ type: 'object.written', store: 'main', key: `close/${emitted++}`, data: {} });
      }),
    );
    const orphans: string[] = [];
    const ROUNDS = 40;
    for (let round = 0; round < ROUNDS && orphans.length === 0; round++) {
      const webhooks = startWebhooks({ connection: redis.worker, prefix: redis.prefix, streamKey: bus.streamKey, urls: [url], log: quietLog, blockMs: 200 });
      await webhooks.ready;
      await new Promise((resolve) => setTimeout(resolve, 50 + Math.random() * 100));
      await webhooks.close();
      // Entries pending in the group whose delivery job was never added.
      const pending = (await worker.xpending(bus.streamKey, group, '-', '+', 1000)) as [string, string, number, number][];
      const queue = webhooks.queues.get(url)!;
      const check = new (queue.constructor as typeof import('bullmq').Queue)(queue.name, { connection: redis.worker, prefix: redis.prefix });
      for (const [id] of pending) {
        const job = await check.getJob(`${id}.${group.slice('webhooks-'.length)}`);
        if (job === undefined) orphans.push(id);
      }
      await check.close();
    }
    emitting = false;
    await emitter;
    console.log('close() race:', JSON.stringify({ emitted, orphans: orphans.length }));
    expect(orphans).toEqual([]);
  });
});
