/**
 * `POST /v1/webhooks/redeliver`: deliveries whose attempts all failed go out again, with their attempts counted
 * afresh, as first sent. Real Redis, the real delivery workers (2 attempts, so a delivery gives up in milliseconds),
 * a local receiver that is down, then back but failing each event's first request again.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventEnvelope } from '../../src/events/bus.js';
import { Queue } from 'bullmq';
import { createApp } from '../../src/api/app.js';
import { startWebhooks, webhookQueueName, type Webhooks } from '../../src/events/webhooks.js';
import { closeRedis, createRedis, whenReady, type RedisConnection } from '../../src/redis.js';
import { quietLog, waitFor } from '../jobs/fixtures/pipeline.js';
import { startTestService, type TestService } from '../support/service.js';

interface Received {
  eventId: string;
  body: string;
  signature: string;
  answered: number;
}

let service: TestService;
let server: Server;
let url: string;
let origin: string;
let connection: RedisConnection;
let webhooks: Webhooks;
const received: Received[] = [];
/** `down`: every request fails; `flaky`: each event's first request after the switch fails, the next succeeds. */
let receiver: 'down' | 'flaky' = 'down';
const failedOnce = new Set<string>();

beforeAll(async () => {
  server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const eventId = String(request.headers['x-kyozo-event-id']);
      const fails = receiver === 'down' || !failedOnce.has(eventId);
      if (receiver === 'flaky') failedOnce.add(eventId);
      const answered = fails ? 503 : 204;
      received.push({ eventId, body: Buffer.concat(chunks).toString('utf8'), signature: String(request.headers['x-kyozo-signature']), answered });
      response.writeHead(answered).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  url = `${origin}/hooks/secret-path`;
  service = await startTestService('webhook-redeliver', { WEBHOOK_URLS: url, WEBHOOK_SECRET: 'redeliver-secret' }, { worker: false });
  connection = createRedis(service.config, 'worker');
  webhooks = startWebhooks({
    connection,
    prefix: service.config.queuePrefix,
    streamKey: service.deps.bus.streamKey,
    urls: [url],
    secret: 'redeliver-secret',
    log: quietLog,
    attempts: 2,
    backoffDelayMs: 10,
    blockMs: 200,
  });
  await webhooks.ready;
});

afterAll(async () => {
  await webhooks?.close();
  await closeRedis(connection);
  await service?.close();
  await new Promise((resolve) => server?.close(resolve));
});

const redeliver = () => service.app.request('/v1/webhooks/redeliver', { method: 'POST' });

describe('POST /v1/webhooks/redeliver', () => {
  it('sends every delivery that gave up again, as first sent, with its attempts counted afresh', async () => {
    const queue = webhooks.queues.get(url)!;
    const events: EventEnvelope[] = [];
    for (const key of ['a', 'b']) events.push((await service.deps.bus.emit({ type: 'object.written', store: 'mem', key, data: {} }))!);
    await waitFor(async () => (await queue.getFailedCount()) === 2, { what: 'both deliveries given up' });
    const first = received.filter((request) => request.eventId === events[0]!.id);
    expect(first.map((request) => request.answered)).toEqual([503, 503]);

    receiver = 'flaky'; // back, but each event's first request fails: only fresh attempts see the second
    const response = await redeliver();
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ redelivered: 2, webhooks: [{ queue: webhookQueueName(url), origin, redelivered: 2 }] });

    await waitFor(async () => (await queue.getCompletedCount()) === 2, { what: 'both delivered' });
    expect(await queue.getFailedCount()).toBe(0);
    for (const event of events) {
      const requests = received.filter((request) => request.eventId === event.id);
      expect(requests.map((request) => request.answered)).toEqual([503, 503, 503, 204]);
      expect(new Set(requests.map((request) => `${request.signature} ${request.body}`)).size).toBe(1); // as first sent
      expect(JSON.parse(requests[3]!.body)).toEqual(event);
    }
    // Nothing left to send: none goes out twice.
    expect(await (await redeliver()).json()).toMatchObject({ redelivered: 0 });
  });

  it('moves each delivery once when two processes ask at once, and none is left behind', async () => {
    const queue = webhooks.queues.get(url)!;
    receiver = 'down';
    for (let i = 0; i < 1000; i++) await service.deps.bus.emit({ type: 'object.written', store: 'mem', key: `many/${i}`, data: {} });
    // Generous: 2,000 failed requests, then 2,000 more, on a loaded 2-core machine.
    await waitFor(async () => (await queue.getFailedCount()) === 1000, { what: '1,000 deliveries given up', timeoutMs: 45_000 });
    receiver = 'flaky';
    // Another web process: its own connection, so the two requests' commands interleave on Redis.
    const other = createRedis(service.config, 'producer');
    await whenReady(other);
    const otherQueue = new Queue(webhookQueueName(url), { connection: other, prefix: service.config.queuePrefix });
    try {
      const otherApp = createApp({ ...service.deps, redis: other, extraQueues: [otherQueue] });
      const answers = await Promise.all([redeliver(), otherApp.request('/v1/webhooks/redeliver', { method: 'POST' })]);
      const counts = await Promise.all(answers.map(async (answer) => ((await answer.json()) as { redelivered: number }).redelivered));
      expect(counts[0]! + counts[1]!).toBe(1000);
      await waitFor(async () => (await queue.getCompletedCount()) === 1002, { what: 'all delivered', timeoutMs: 45_000 });
      expect(await queue.getFailedCount()).toBe(0);
    } finally {
      await otherQueue.close();
      await closeRedis(other);
    }
  }, 120_000);

  it('leaves a delivery refused as forged failed, and clears the stall count of those it sends again', async () => {
    const queue = webhooks.queues.get(url)!;
    await queue.add('deliver', { url: 'http://127.0.0.1:9/elsewhere', type: 'object.written', eventId: '1-1', body: '{}' }, { jobId: 'forged' });
    await waitFor(async () => (await queue.getFailedCount()) === 1, { what: 'the forged delivery refused' });
    receiver = 'down';
    const event = (await service.deps.bus.emit({ type: 'object.written', store: 'mem', key: 'stalled-once', data: {} }))!;
    await waitFor(async () => (await queue.getFailedCount()) === 2, { what: 'the delivery given up' });
    const [given] = (await queue.getFailed()).filter((job) => job.data.eventId === event.id);
    // As a delivery whose worker died under it once, before it gave up: BullMQ's retry leaves that count.
    await connection.hset(queue.toKey(given!.id!), 'stc', 1);
    receiver = 'flaky';

    expect(await (await redeliver()).json()).toMatchObject({ redelivered: 1 });
    await waitFor(async () => (await (await queue.getJob(given!.id!))!.getState()) === 'completed', { what: 'delivered' });
    expect((await queue.getJob(given!.id!))!.stalledCounter).toBe(0);
    expect((await queue.getJob('forged'))!.failedReason).toMatch(/^refused/);
    expect(received.some((request) => request.eventId === '1-1')).toBe(false);
  });

  it('refuses a body not declared JSON (a cross-site form), and other methods', async () => {
    const form = await service.app.request('/v1/webhooks/redeliver', { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: 'a=1' });
    expect(form.status).toBe(415);
    expect((await service.app.request('/v1/webhooks/redeliver')).status).toBe(405);
  });
});
