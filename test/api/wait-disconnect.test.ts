/**
 * A `?wait=true` whose client went away stops waiting (before session 19 its QueueEvents listeners, its poller watch
 * and its timer stayed until WAIT_TIMEOUT_MS), and a repeated Idempotency-Key header is refused (it was read as one
 * joined key). Over a real HTTP server (@hono/node-server aborts the request's signal when the client disconnects).
 */
import { request as httpRequest } from 'node:http';
import type { QueueEvents } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listen, type HttpServer } from '../../src/api/server.js';
import { quietLog, startTestService, type TestService } from '../support/service.js';
import { waitFor } from '../jobs/fixtures/pipeline.js';

const TOKEN = 'wait-disconnect-token-0123456789';
const WAITERS = 30;
let s: TestService;
let server: HttpServer;

beforeAll(async () => {
  s = await startTestService('wait-disconnect', { API_TOKENS: TOKEN, WAIT_TIMEOUT_MS: '20000' });
  server = await listen(s.app, { host: '127.0.0.1', port: 0, apiTokens: [TOKEN] }, quietLog);
});
afterAll(async () => {
  await server?.close(1_000);
  await s?.close();
});

type WaiterInsides = {
  events: Map<string, Promise<{ events: QueueEvents }>>;
  pollers: Map<string, { watched: Map<string, Set<unknown>> }>;
};
async function held(): Promise<{ completedListeners: number; failedListeners: number; watchedJobs: number }> {
  const waiter = s.deps.waiter as unknown as WaiterInsides;
  const events = (await waiter.events.get('objects'))?.events;
  return {
    completedListeners: events?.listenerCount('completed') ?? 0,
    failedListeners: events?.listenerCount('failed') ?? 0,
    watchedJobs: waiter.pollers.get('objects')?.watched.size ?? 0,
  };
}

/** Sends a PUT and returns a function that cuts the connection. */
function send(path: string, headers: Record<string, string | string[]> = {}, body = 'x'): { cut: () => void; answer: Promise<{ status: number; text: string }> } {
  const url = new URL(path, server.url);
  const all = { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'text/plain', 'Content-Length': String(body.length), ...headers };
  const req = httpRequest({ host: url.hostname, port: url.port, path: url.pathname + url.search, method: 'PUT', headers: all });
  const answer = new Promise<{ status: number; text: string }>((resolve, reject) => {
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, text }));
    });
    req.on('error', reject);
  });
  req.end(body);
  return { cut: () => req.destroy(), answer };
}

describe('?wait=true and the client going away', () => {
  it('a client that disconnects during its wait releases the listeners, poller watches and timer it held', async () => {
    const objects = s.deps.queues.queue('objects');
    await objects.pause(); // the jobs stay waiting: only the client (or WAIT_TIMEOUT_MS) can end the waits
    try {
      const before = await held();
      const requests = Array.from({ length: WAITERS }, (_, i) => send(`/v1/stores/mem/objects/gone/${i}?wait=true`));
      for (const r of requests) r.answer.catch(() => undefined);
      await waitFor(async () => (await held()).watchedJobs === before.watchedJobs + WAITERS, { what: 'every wait set up' });
      for (const r of requests) r.cut();
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      // Each gone client's wait still holds 2 QueueEvents listeners and a poller watch (and a timer) for 20 s.
      expect(await held()).toEqual(before);
    } finally {
      await objects.resume();
    }
  });
});

describe('Idempotency-Key sent twice', () => {
  it('is refused with 400, as X-Copy-Source and ?wait given twice are, not read as the key "a, b"', async () => {
    const { answer } = send('/v1/stores/mem/objects/twice', { 'Idempotency-Key': ['a', 'b'] });
    const { status, text } = await answer;
    expect(status, text).toBe(400);
  });
});
