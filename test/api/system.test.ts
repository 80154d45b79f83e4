import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Worker } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/api/app.js';
import { routeTable } from '../../src/api/openapi.js';
import { listen } from '../../src/api/server.js';
import { webhookQueueName } from '../../src/events/webhooks.js';
import { redisCli, redisServerUnavailableReason, startRedisServer } from '../cluster/redis-server.js';
import { RamProvider } from '../../src/providers/ram.js';
import { closeRedis, createRedis } from '../../src/redis.js';
import type { HealthReport, StorageProvider } from '../../src/providers/types.js';
import { interceptMethod } from '../support/intercept.js';
import { quietLog, startTestService, type TestService } from '../support/service.js';

const TOKEN = 'test-token-with-enough-entropy';
let service: TestService;
const auth = { Authorization: `Bearer ${TOKEN}` };
const basic = (password: string) => ({ Authorization: `Basic ${Buffer.from(`anyone:${password}`).toString('base64')}` });

/** A concrete path for a route of the table, with placeholders filled. */
function concrete(path: string): string {
  return path.replace('{store}', 'files').replace('{key}', 'some/key').replace('{versionId}', 'v1').replace('{id}', 'objects-x');
}

beforeAll(async () => {
  service = await startTestService('api-system', { API_TOKENS: `${TOKEN},second-token-for-tests` });
});
afterAll(async () => {
  await service?.close();
});

describe('auth', () => {
  const protectedRoutes = routeTable.filter((route) => route.auth === 'bearer' || route.auth === 'basic');

  it.each(protectedRoutes.map((route) => [route.method, route.path] as const))('%s %s answers 401 without a token and with a wrong one', async (method, path) => {
    for (const headers of [{}, { Authorization: 'Bearer wrong-token' }, basic('wrong-token')]) {
      const response = await service.app.request(concrete(path), { method, headers });
      expect(response.status).toBe(401);
      if (method !== 'HEAD') expect(((await response.json()) as { error: { code: string } }).error.code).toBe('UNAUTHORIZED');
    }
  });

  it('signed routes answer 403 without a valid signature', async () => {
    for (const route of routeTable.filter((r) => r.auth === 'signature')) {
      const response = await service.app.request(concrete(route.path), { method: route.method });
      expect(response.status).toBe(403);
    }
  });

  it('accepts every configured token', async () => {
    expect((await service.app.request('/v1/stores', { headers: auth })).status).toBe(200);
    expect((await service.app.request('/v1/stores', { headers: { Authorization: 'Bearer second-token-for-tests' } })).status).toBe(200);
  });

  it('every route Hono serves is in the route table (and so in /openapi.json and the 401 tests)', () => {
    const documented = new Set(routeTable.map((route) => `${route.method} ${route.path.replace(/\{[^}]+\}/g, ':p')}`));
    const served = service.app.routes
      .filter((route) => route.method !== 'ALL' && !route.path.startsWith('/admin/queues/'))
      .map((route) => `${route.method} ${route.path.replace(/:[^/]+/g, ':p').replace(/\/objects\/\*$/, '/objects/:p').replace(/\/signed\/:p\/\*$/, '/signed/:p/:p')}`);
    const undocumented = served.filter((route) => !documented.has(route) && !documented.has(route.replace('/objects/:p', '/objects/:p/versions')));
    expect(undocumented).toEqual([]);
  });
});

describe('system routes', () => {
  it('/health answers without a token', async () => {
    const response = await service.app.request('/health');
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ status: 'ok' });
  });

  it('/ready reports Redis and every store', async () => {
    const response = await service.app.request('/ready');
    expect(response.status).toBe(200);
    const body = (await response.json()) as { redis: { status: string }; stores: Record<string, { status: string }> };
    expect(body.redis.status).toBe('ok');
    expect(Object.keys(body.stores)).toEqual(['files', 'mem']);
  });

  it('/ready and /metrics tell how many workers each job queue has; none is told, not judged: still ready', async () => {
    const ready = (await (await service.app.request('/ready')).json()) as { workers: Record<string, number> };
    expect(ready.workers.objects).toBeGreaterThanOrEqual(1);
    expect(ready.workers.maintenance).toBeGreaterThanOrEqual(1);
    expect(await (await service.app.request('/metrics')).text()).toMatch(/kyozo_queue_workers\{queue="objects"\} [1-9]/);
    const alone = await startTestService('api-ready-no-worker', {}, { worker: false });
    try {
      const response = await alone.app.request('/ready');
      expect(response.status).toBe(200);
      expect(await response.json()).toMatchObject({ status: 'ok', workers: { objects: 0, maintenance: 0 } });
      expect(await (await alone.app.request('/metrics')).text()).toContain('kyozo_queue_workers{queue="objects"} 0');
    } finally {
      await alone.close();
    }
  });

  it('/ready names the stores of this process that no connected worker serves (jobs for them would fail NOT_FOUND)', async () => {
    const body = async (app: { request: (path: string) => Response | Promise<Response> }) =>
      (await (await app.request('/ready')).json()) as { status: string; storesWithoutWorker?: string[] };
    expect((await body(service.app)).storesWithoutWorker).toEqual([]);
    // A web process started with a store its workers were not: `extra`.
    const stores = new Map<string, StorageProvider>([...service.deps.stores, ['extra', new RamProvider({ maxBytes: 1024 })]]);
    const ahead = createApp({ ...service.deps, stores });
    expect(await body(ahead)).toMatchObject({ status: 'ok', storesWithoutWorker: ['extra'] });
    // A worker that does not say its stores (an earlier version, another program): what they serve cannot be told.
    const connection = createRedis(service.config, 'worker');
    const unnamed = new Worker('objects', async () => undefined, { connection, prefix: service.config.queuePrefix, autorun: false });
    await unnamed.waitUntilReady();
    try {
      const ready = await body(ahead);
      expect(ready.status).toBe('ok');
      expect(ready.storesWithoutWorker).toBeUndefined();
    } finally {
      await unnamed.close();
      await closeRedis(connection);
    }
  });

  it('/ready is 503 while the staging store is down: no upload over STAGING_INLINE_MAX could be taken (session 10)', async () => {
    const broken = await startTestService('api-ready-staging', { API_TOKENS: TOKEN, STORES: 'mem:ram' }, { worker: false });
    try {
      expect((await broken.app.request('/ready')).status).toBe(200);
      // The staging directory gone and a file in its place (an unmounted volume, a path taken).
      const staging = path.join(broken.root, '.staging');
      await rm(staging, { recursive: true, force: true });
      await writeFile(staging, 'not a directory');
      const answer = await broken.app.request('/ready', { headers: auth });
      expect(answer.status).toBe(503);
      expect(((await answer.json()) as { staging: { status: string } }).staging.status).toBe('down');
    } finally {
      await broken.close();
    }
  });

  it('/ready stays 200 with a part that reads but cannot write, and says so: status degraded (session 11)', async () => {
    const degraded = async (): Promise<HealthReport> => ({ status: 'degraded', detail: 'readable, writes fail: ENOSPC', latencyMs: 1 });
    const fullStaging = createApp({ ...service.deps, staging: { ...service.deps.staging, health: degraded } });
    const staged = await fullStaging.request('/ready', { headers: auth });
    expect(staged.status).toBe(200);
    expect(await staged.json()).toMatchObject({ status: 'degraded', staging: { status: 'degraded', detail: expect.stringMatching(/ENOSPC/) }, redis: { status: 'ok' } });

    const stores = new Map(service.deps.stores);
    stores.set('files', interceptMethod(stores.get('files')!, 'health', () => degraded));
    const fullStore = await createApp({ ...service.deps, stores }).request('/ready');
    expect(fullStore.status).toBe(200);
    expect(await fullStore.json()).toMatchObject({ status: 'degraded', staging: { status: 'ok' }, stores: { files: { status: 'degraded' }, mem: { status: 'ok' } } });
    expect(await (await service.app.request('/ready')).json()).toMatchObject({ status: 'ok' });
  });

  it.skipIf(redisServerUnavailableReason() !== undefined)('/ready is 503 while Redis answers PING but refuses writes (maxmemory reached)', async () => {
    const redis = await startRedisServer(['--maxmemory-policy', 'noeviction']); // its own: the shared one stays writable
    const full = await startTestService('api-ready-oom', { API_TOKENS: TOKEN, REDIS_URL: redis.url }, { worker: false });
    try {
      await redisCli(redis.port, 'config', 'set', 'maxmemory', '1');
      const refused = await full.app.request('/ready', { headers: auth });
      expect(refused.status).toBe(503);
      expect(((await refused.json()) as { redis: { status: string; detail: string } }).redis).toMatchObject({ status: 'down', detail: expect.stringMatching(/OOM/) });
      await redisCli(redis.port, 'config', 'set', 'maxmemory', '0');
      expect((await full.app.request('/ready')).status).toBe(200);
    } finally {
      await full.close();
      await redis.stop();
    }
  });

  it('/metrics has request durations, provider operations and queue counts', async () => {
    await service.app.request('/v1/stores/mem/objects/metrics/probe?wait=true', { method: 'PUT', body: 'x', headers: auth });
    await service.app.request('/v1/stores/mem/objects/metrics/probe', { headers: auth });
    const text = await (await service.app.request('/metrics')).text();
    expect(text).toContain('kyozo_http_request_duration_seconds_bucket');
    expect(text).toMatch(/kyozo_provider_op_duration_seconds_count\{store="mem",op="read",outcome="ok"\} [1-9]/);
    expect(text).toMatch(/kyozo_queue_jobs\{queue="objects",state="completed"\} [1-9]/);
  });

  it('/openapi.json describes every route of the table', async () => {
    const document = (await (await service.app.request('/openapi.json')).json()) as { paths: Record<string, Record<string, unknown>> };
    for (const route of routeTable) expect(document.paths[route.path]?.[route.method.toLowerCase()], `${route.method} ${route.path}`).toBeDefined();
  });
});

describe('Bull Board', () => {
  it('answers 401 without credentials and serves the page and its assets with a token as password', async () => {
    expect((await service.app.request('/admin/queues')).status).toBe(401);
    const page = await service.app.request('/admin/queues', { headers: basic(TOKEN) });
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain('Kyozo Storage');
    const asset = /(?:src|href)="([^"]*static[^"]+\.(?:js|css))"/.exec(html)?.[1];
    expect(asset, 'the page links a static asset').toBeDefined();
    const assetResponse = await service.app.request(asset!.startsWith('/') ? asset! : `/admin/queues/${asset}`, { headers: basic(TOKEN) });
    expect(assetResponse.status).toBe(200);
    const queues = await service.app.request('/admin/queues/api/queues', { headers: basic(TOKEN) });
    expect(queues.status).toBe(200);
    expect(JSON.stringify(await queues.json())).toContain('"name":"objects"');
  });

  it('answers a method its page does not take with 405 and Allow, as every route does; without credentials 401 first', async () => {
    expect((await service.app.request('/admin/queues', { method: 'POST' })).status).toBe(401);
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) {
      const response = await service.app.request('/admin/queues', { method, headers: basic(TOKEN) });
      expect(response.status, method).toBe(405);
      expect(response.headers.get('Allow')).toBe('GET, HEAD');
      expect(((await response.json()) as { error: { code: string } }).error.code).toBe('METHOD_NOT_ALLOWED');
    }
    // A method a path does answer, passed on by its handler (a static file not there), is a 404, not that 405.
    for (const method of ['GET', 'HEAD']) {
      expect((await service.app.request('/admin/queues/static/no-such-file.js', { method, headers: basic(TOKEN) })).status, method).toBe(404);
    }
  });

  it('answers 400, not 500, to a job id BullMQ refuses, in the shape its page reads (session 10)', async () => {
    const headers = { ...basic(TOKEN), 'Content-Type': 'application/json' };
    for (const jobId of ['a:b', '123']) {
      const body = JSON.stringify({ name: 'cleanup', data: {}, options: { jobId } });
      const response = await service.app.request('/admin/queues/api/queues/maintenance/add', { method: 'POST', headers, body });
      expect(response.status, jobId).toBe(400);
      expect(((await response.json()) as { message: string }).message).toMatch(/^Custom Id cannot/);
    }
  });

  it('lists the delivery queue of every webhook URL', async () => {
    const urls = ['http://127.0.0.1:9/first', 'http://127.0.0.1:9/second'];
    const withWebhooks = await startTestService('api-board-webhooks', { API_TOKENS: TOKEN, WEBHOOK_URLS: urls.join(',') }, { worker: false });
    try {
      const queues = (await (await withWebhooks.app.request('/admin/queues/api/queues', { headers: basic(TOKEN) })).json()) as { queues: { name: string }[] };
      const names = queues.queues.map((queue) => queue.name);
      for (const url of urls) expect(names).toContain(webhookQueueName(url));
      // And counted in /metrics: a backlog of deliveries shows there.
      const metrics = await (await withWebhooks.app.request('/metrics')).text();
      for (const url of urls) expect(metrics).toContain(`kyozo_queue_jobs{queue="${webhookQueueName(url)}",state="waiting"}`);
    } finally {
      await withWebhooks.close();
    }
  });
});

describe('request ids', () => {
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

  it("answers every request with X-Request-Id: the client's when plausible, else a new one (in process and over HTTP)", async () => {
    const server = await listen(service.app, { host: '127.0.0.1', port: 0, apiTokens: [TOKEN] }, quietLog);
    try {
      const clients: [string, (path: string, init?: RequestInit) => Promise<Response>][] = [
        ['app.request', async (path, init) => service.app.request(path, init)],
        ['node http', (path, init) => fetch(`${server.url}${path}`, init)],
      ];
      for (const [via, request] of clients) {
        const fresh = await request('/health');
        expect(fresh.headers.get('x-request-id'), via).toMatch(UUID);
        expect((await request('/health')).headers.get('x-request-id'), via).not.toBe(fresh.headers.get('x-request-id'));
        const replaced = await request('/health', { headers: { 'X-Request-Id': 'not an id: spaces' } });
        expect(replaced.headers.get('x-request-id'), via).toMatch(UUID);

        const put = await request('/v1/stores/mem/objects/request-id/a', { method: 'PUT', body: 'x', headers: { ...auth, 'X-Request-Id': 'put-1' } });
        expect(put.status, via).toBe(202);
        expect(put.headers.get('x-request-id'), via).toBe('put-1');
        expect(put.headers.get('location'), via).toBe(((await put.json()) as { statusUrl: string }).statusUrl);
        expect(put.headers.get('content-type'), via).toContain('application/json');

        const missing = await request('/v1/stores/nowhere/objects/a', { headers: { ...auth, 'X-Request-Id': 'error-1' } });
        expect(missing.status, via).toBe(404);
        expect(missing.headers.get('x-request-id'), via).toBe('error-1');
      }
    } finally {
      await server.close();
    }
  });
});

describe('?wait=true', () => {
  it('many requests waiting at once are no listener leak warning', async () => {
    const waiting = await startTestService('api-many-waits', { API_TOKENS: TOKEN, WAIT_TIMEOUT_MS: '300' }, { worker: false });
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(`${warning.name}: ${warning.message}`);
    process.on('warning', onWarning);
    try {
      const statuses = await Promise.all(
        Array.from({ length: 15 }, (_, i) =>
          waiting.app.request(`/v1/stores/mem/objects/waits/${i}?wait=true`, { method: 'PUT', body: 'x', headers: { Authorization: `Bearer ${TOKEN}` } }),
        ),
      );
      expect(statuses.map((response) => response.status)).toEqual(Array.from({ length: 15 }, () => 202)); // no worker: each times out
      await new Promise((resolve) => setImmediate(resolve));
      expect(warnings.filter((warning) => warning.includes('MaxListeners'))).toEqual([]);
    } finally {
      process.off('warning', onWarning);
      await waiting.close();
    }
  });
});

describe('closing the HTTP server', () => {
  it('answers the requests in progress, ends event streams at once, and takes no new request', async () => {
    const draining = await startTestService('api-drain', { API_TOKENS: TOKEN, WAIT_TIMEOUT_MS: '700' }, { worker: false });
    const server = await listen(draining.app, { host: '127.0.0.1', port: 0, apiTokens: [TOKEN] }, quietLog);
    try {
      const auth = { Authorization: `Bearer ${TOKEN}` };
      const events = await fetch(`${server.url}/v1/events`, { headers: auth });
      const eventsEnded = (async () => {
        const reader = events.body!.getReader();
        try {
          while (!(await reader.read()).done);
        } catch {
          // cut: what an ended stream looks like to fetch
        }
      })();
      const waiting = fetch(`${server.url}/v1/stores/mem/objects/drain/doc?wait=true`, { method: 'PUT', body: 'x', headers: auth });
      await new Promise((resolve) => setTimeout(resolve, 200)); // the PUT is now waiting for its job (no worker runs)

      const closeStarted = Date.now();
      const closing = server.close(10_000);
      await eventsEnded;
      const answer = await waiting;
      expect(answer.status).toBe(202); // its wait ran out: the job is queued, the client has its id
      expect(((await answer.json()) as { jobId: string }).jobId).toMatch(/^objects-/);
      await closing;
      expect(Date.now() - closeStarted).toBeLessThan(5_000); // not held by the event stream or an idle connection
      await expect(fetch(`${server.url}/health`)).rejects.toThrow();
    } finally {
      await server.close(0);
      await draining.close();
    }
  });
});

