import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook, WebhookVerificationError } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createEventBus, type EventEnvelope } from '../../src/events/bus.js';
import type { Redis } from 'ioredis';
import { startWebhooks, verifySignature, webhookQueueName, type Webhooks, type WebhooksOptions } from '../../src/events/webhooks.js';
import { deleteKeys, uniquePrefix } from '../support/redis.js';
import { inlineBody, quietLog, startPipeline, waitFor, type Pipeline } from './fixtures/pipeline.js';

const SECRET = 'test-secret';

interface Received {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  answered: number;
}

describe('webhooks', () => {
  let p: Pipeline;
  let server: Server;
  let base: string;
  let webhooks: Webhooks;
  const received: Received[] = [];
  const failuresLeft = new Map<string, number>();
  /** Requests to `/hangs`, never answered while `hang` is true. */
  const hung: ServerResponse[] = [];
  let hang = true;

  beforeAll(async () => {
    server = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        if (request.url === '/hangs' && hang) return void hung.push(response);
        if (request.url === '/moved') {
          received.push({ method: request.method ?? '', path: request.url, headers: request.headers, body, answered: 301 });
          return void response.writeHead(301, { location: '/moved-target' }).end();
        }
        const eventId = String(request.headers['x-kyozo-event-id']);
        const key = `${request.url}:${eventId}`;
        const left = request.url === '/flaky' ? (failuresLeft.get(key) ?? 2) : 0;
        failuresLeft.set(key, left - 1);
        const status = left > 0 ? 500 : 204;
        received.push({ method: request.method ?? '', path: request.url ?? '', headers: request.headers, body, answered: status });
        response.writeHead(status).end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

    p = await startPipeline('webhooks');
    await p.startWorkers();
    webhooks = startWebhooks({
      connection: p.redis.worker,
      prefix: p.prefix,
      streamKey: p.bus.streamKey,
      urls: [`${base}/good`, `${base}/flaky`, `${base}/moved`],
      secret: SECRET,
      log: quietLog,
      backoffDelayMs: 20,
      blockMs: 200,
    });
    await webhooks.ready;
  });

  afterAll(async () => {
    await webhooks?.close();
    await p?.close();
    await new Promise((resolve) => server?.close(resolve));
  });

  it('POSTs every event as signed JSON to every URL', async () => {
    const { jobId } = await p.queues.enqueue('write', { store: 'main', key: 'hooked', body: inlineBody('hook') });
    const event = await p.waitForEvent('object.written', jobId);

    const delivery = await waitFor(() => received.find((r) => r.path === '/good' && r.headers['x-kyozo-event-id'] === event.id), {
      what: 'delivery to /good',
    });
    expect(delivery.headers['content-type']).toBe('application/json');
    expect(verifySignature(delivery.body, delivery.headers['x-kyozo-signature'] as string, SECRET)).toBe(true);
    expect(verifySignature(delivery.body, delivery.headers['x-kyozo-signature'] as string, 'wrong secret')).toBe(false);
    expect(JSON.parse(delivery.body) as EventEnvelope).toEqual(event);
  });

  it('retries a receiver that fails twice and delivers on the third attempt', async () => {
    const event = await p.bus.emit({ type: 'object.deleted', store: 'main', key: 'gone', data: { key: 'gone' } });
    const id = event!.id;
    const third = await waitFor(
      () => {
        const attempts = received.filter((r) => r.path === '/flaky' && r.headers['x-kyozo-event-id'] === id);
        return attempts.length >= 3 ? attempts : undefined;
      },
      { what: 'three deliveries to /flaky' },
    );
    expect(third.map((r) => r.answered)).toEqual([500, 500, 204]);
    expect(new Set(third.map((r) => r.body)).size).toBe(1);
    for (const attempt of third) expect(verifySignature(attempt.body, attempt.headers['x-kyozo-signature'] as string, SECRET)).toBe(true);
    const job = await webhooks.queues.get(`${base}/flaky`)!.getJob(String(third[2]!.headers['x-kyozo-delivery']));
    await waitFor(async () => (await job?.getState()) === 'completed', { what: 'delivery job completed' });
    expect(received.filter((r) => r.path === '/good' && r.headers['x-kyozo-event-id'] === id)).toHaveLength(1);
  });

  it('signs every attempt as Standard Webhooks do: its library verifies each, and refuses one replayed after 5 minutes', async () => {
    const sentFrom = Math.floor(Date.now() / 1000);
    const event = (await p.bus.emit({ type: 'object.deleted', store: 'main', key: 'standard', data: { key: 'standard' } }))!;
    const attempts = await waitFor(
      () => {
        const found = received.filter((r) => r.path === '/flaky' && r.headers['x-kyozo-event-id'] === event.id);
        return found.length >= 3 ? found : undefined;
      },
      { what: 'three deliveries to /flaky' },
    );
    const receiver = new Webhook(Buffer.from(SECRET, 'utf8').toString('base64'));
    for (const attempt of attempts) {
      const headers = attempt.headers as Record<string, string>;
      expect(headers['webhook-id']).toBe(event.id);
      expect(Number(headers['webhook-timestamp'])).toBeGreaterThanOrEqual(sentFrom);
      expect(Number(headers['webhook-timestamp'])).toBeLessThanOrEqual(Math.ceil(Date.now() / 1000));
      expect(receiver.verify(attempt.body, headers)).toEqual(event);
      expect(() => receiver.verify(attempt.body.replace('standard', 'standarD'), headers)).toThrow(WebhookVerificationError);
      expect(() => new Webhook(Buffer.from('wrong secret').toString('base64')).verify(attempt.body, headers)).toThrow(WebhookVerificationError);
    }
    const last = attempts[2]!;
    vi.useFakeTimers({ toFake: ['Date'], now: Date.now() + 6 * 60_000 });
    try {
      expect(() => receiver.verify(last.body, last.headers as Record<string, string>)).toThrow(/too old/);
    } finally {
      vi.useRealTimers();
    }
  });

  it('takes a redirect for a failed delivery, retried, instead of following it with a body-less GET', async () => {
    const event = (await p.bus.emit({ type: 'object.deleted', store: 'main', key: 'moved', data: {} }))!;
    const attempts = await waitFor(
      () => {
        const attempts = received.filter((r) => r.path === '/moved' && r.headers['x-kyozo-event-id'] === event.id);
        return attempts.length >= 2 ? attempts : undefined;
      },
      { timeoutMs: 5_000, what: 'a second delivery to /moved' },
    );
    expect(attempts.map((r) => r.method)).toEqual(['POST', 'POST']);
    expect(received.filter((r) => r.path === '/moved-target')).toHaveLength(0);
    const job = await webhooks.queues.get(`${base}/moved`)!.getJob(String(attempts[0]!.headers['x-kyozo-delivery']));
    expect(job?.failedReason).toMatch(/answered 301 \(Location: \/moved-target\)/);
    // The receiver's path may hold its secret: failures name the URL by origin and hash.
    expect(job?.failedReason).toBe(`${base} (${webhookQueueName(`${base}/moved`)}) answered 301 (Location: /moved-target)`);
  });

  /** Webhooks on a stream of their own, as the worker processes `start` stands for; `dispose` ends them all. */
  async function isolated(options: Partial<WebhooksOptions> = {}) {
    const prefix = uniquePrefix('webhooks-iso');
    const bus = createEventBus({ redis: p.redis.worker, prefix, maxLen: 1000, log: quietLog });
    const started: Webhooks[] = [];
    const start = async (urls: string[]) => {
      const webhooks = startWebhooks({ connection: p.redis.worker, prefix, streamKey: bus.streamKey, urls, log: quietLog, blockMs: 200, ...options });
      started.push(webhooks);
      await webhooks.ready;
      return webhooks;
    };
    const emit = async (key: string) => (await bus.emit({ type: 'object.written', key, data: {} }))!;
    const dispose = async () => {
      await Promise.all(started.map((webhooks) => webhooks.close()));
      await bus.close();
      await deleteKeys(p.redis.worker, prefix);
    };
    return { bus, start, emit, dispose };
  }

  const deliveredTo = (path: string, event: EventEnvelope) => received.filter((r) => r.path === path && r.headers['x-kyozo-event-id'] === event.id);

  it('a receiver that hangs does not hold up the others', async () => {
    const { start, emit, dispose } = await isolated({ concurrency: 2, timeoutMs: 5_000 });
    try {
      await start([`${base}/hangs`, `${base}/good`]);
      const events: EventEnvelope[] = [];
      for (let i = 0; i < 6; i++) events.push(await emit(`hol/${i}`));
      // The hung receiver holds its two slots for the whole timeout; /good gets every event long before it ends.
      await waitFor(() => events.every((event) => deliveredTo('/good', event).length > 0), { timeoutMs: 3_000, what: 'every event delivered to /good' });
      expect(hung.length).toBeGreaterThan(0);
    } finally {
      hang = false;
      for (const response of hung) response.writeHead(204).end();
      await dispose();
    }
  });

  it('every URL gets every event, once, while processes with different URL lists run side by side', async () => {
    const { start, emit, dispose } = await isolated();
    try {
      // A rolling change of WEBHOOK_URLS: an old process with one URL beside a new one with two.
      await start([`${base}/list-old`]);
      await start([`${base}/list-old`, `${base}/list-new`]);
      const events: EventEnvelope[] = [];
      for (let i = 0; i < 20; i++) events.push(await emit(`lists/${i}`));
      await waitFor(() => events.every((event) => deliveredTo('/list-old', event).length > 0 && deliveredTo('/list-new', event).length > 0), {
        what: 'every event delivered to both URLs',
      });
      for (const event of events) expect(deliveredTo('/list-old', event)).toHaveLength(1);
    } finally {
      await dispose();
    }
  });

  it('the consumer group is made again when the events stream is lost (Redis restarted empty)', async () => {
    const { bus, start, emit, dispose } = await isolated();
    try {
      await start([`${base}/good`]);
      const before = await emit('lost/before');
      await waitFor(() => deliveredTo('/good', before).length > 0, { what: 'the event before the loss delivered' });
      await p.redis.worker.del(bus.streamKey);
      const after = await emit('lost/after');
      await waitFor(() => deliveredTo('/good', after).length > 0, { timeoutMs: 5_000, what: 'the first event after the loss delivered' });
    } finally {
      await dispose();
    }
  });

  it('a consumer group deleted by hand is made again where it was: no event is delivered twice', async () => {
    const { bus, start, emit, dispose } = await isolated();
    try {
      const url = `${base}/good`;
      const webhooks = await start([url]);
      const before = await emit('destroyed/before');
      await waitFor(() => deliveredTo('/good', before).length > 0, { what: 'the event before the deletion delivered' });
      // Its delivery job gone too (aged out): nothing else would stop a second delivery.
      const queue = webhooks.queues.get(url)!;
      await waitFor(async () => ((await queue.getJobCounts('completed')).completed ?? 0) > 0, { what: 'the delivery job completed' });
      await queue.clean(0, 1000, 'completed');
      await p.redis.worker.xgroup('DESTROY', bus.streamKey, webhookQueueName(url));
      const after = await emit('destroyed/after');
      await waitFor(() => deliveredTo('/good', after).length > 0, { timeoutMs: 5_000, what: 'the event after the deletion delivered' });
      await waitFor(async () => Object.values(await queue.getJobCounts('waiting', 'active', 'delayed')).every((count) => count === 0), {
        what: 'the delivery queue idle',
      });
      expect(deliveredTo('/good', before)).toHaveLength(1);
    } finally {
      await dispose();
    }
  });

  it('a stream entry that is not an event is skipped and acknowledged; the events read with it are delivered', async () => {
    const { bus, start, emit, dispose } = await isolated();
    try {
      await start([`${base}/good`]);
      await p.redis.worker.xadd(bus.streamKey, '*', 'type', 'object.written', 'e', '{not json');
      const event = await emit('poison/after');
      await waitFor(() => deliveredTo('/good', event).length > 0, { what: 'the event after the foreign entry delivered' });
      await waitFor(async () => ((await (p.redis.worker as Redis).xpending(bus.streamKey, webhookQueueName(`${base}/good`))) as [number])[0] === 0, {
        what: 'nothing left pending in the group',
      });
    } finally {
      await dispose();
    }
  });

  it('a consumer left by a process that died is removed once it is idle and holds nothing', async () => {
    const { bus, start, emit, dispose } = await isolated({ claimIdleMs: 100 });
    try {
      const url = `${base}/good`;
      await start([url]);
      const group = webhookQueueName(url);
      const event = await emit('consumers/read'); // the live consumer exists once it has read something
      await waitFor(() => deliveredTo('/good', event).length > 0, { what: 'the event delivered' });
      await (p.redis.worker as Redis).xgroup('CREATECONSUMER', bus.streamKey, group, 'killed-process');
      const consumers = async () => ((await (p.redis.worker as Redis).xinfo('CONSUMERS', bus.streamKey, group)) as string[][]).map((fields) => fields[1]);
      expect(await consumers()).toContain('killed-process');
      await waitFor(async () => !(await consumers()).includes('killed-process'), { timeoutMs: 5_000, what: 'the dead consumer removed' });
      expect(await consumers()).toHaveLength(1); // the live one stays
    } finally {
      await dispose();
    }
  });
});
