import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEventBus, type EventEnvelope } from '../../src/events/bus.js';
import { startWebhooks, verifySignature, type Webhooks } from '../../src/events/webhooks.js';
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
  });

  it('a receiver that hangs does not hold up the others', async () => {
    // An instance of its own (its own stream): the file's instance has no hanging URL.
    const prefix = uniquePrefix('webhooks-hol');
    const bus = createEventBus({ redis: p.redis.worker, prefix, maxLen: 1000, log: quietLog });
    const isolated = startWebhooks({
      connection: p.redis.worker,
      prefix,
      streamKey: bus.streamKey,
      urls: [`${base}/hangs`, `${base}/good`],
      log: quietLog,
      concurrency: 2,
      timeoutMs: 5_000,
      blockMs: 200,
    });
    try {
      await isolated.ready;
      const events: EventEnvelope[] = [];
      for (let i = 0; i < 6; i++) events.push((await bus.emit({ type: 'object.written', key: `hol/${i}`, data: {} }))!);
      // The hung receiver holds its two slots for the whole timeout; /good gets every event long before it ends.
      await waitFor(() => events.every((event) => received.some((r) => r.path === '/good' && r.headers['x-kyozo-event-id'] === event.id)), {
        timeoutMs: 3_000,
        what: 'every event delivered to /good',
      });
      expect(hung.length).toBeGreaterThan(0);
    } finally {
      hang = false;
      for (const response of hung) response.writeHead(204).end();
      await isolated.close();
      await bus.close();
      await deleteKeys(p.redis.worker, prefix);
    }
  });
});
