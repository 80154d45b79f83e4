/**
 * The security review's findings, each as the behaviour that closes it: what a page in the operator's browser may
 * not do (cross-site writes, DNS rebinding), how served objects are kept from running as pages, what `/ready`
 * tells a caller without a token, and the limits on maintenance bodies and event streams.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/api/app.js';
import { listen, type HttpServer } from '../../src/api/server.js';
import { quietLog, startTestService, type TestService } from '../support/service.js';

const TOKEN = 'security-review-token-0123456789';
const bearer = { Authorization: `Bearer ${TOKEN}` };
const basic = { Authorization: `Basic ${Buffer.from(`any:${TOKEN}`).toString('base64')}` };
const crossSite = { Origin: 'http://evil.example', 'Sec-Fetch-Site': 'cross-site' };

let service: TestService;
const request = (path: string, init?: RequestInit) => service.app.request(path, init);
const errorOf = async (response: Response) => ((await response.json()) as { error: { code: string; message: string } }).error;

beforeAll(async () => {
  service = await startTestService('api-security-review', { API_TOKENS: TOKEN, STORES: 'files:disk' });
});
afterAll(async () => {
  await service?.close();
});

describe('cross-site browser requests', () => {
  it('a cross-site text/plain POST to the board is refused, with the cached basic credentials', async () => {
    const body = JSON.stringify({ name: 'delete', data: { store: 'files', key: 'victim.txt' } });
    const response = await request('/admin/queues/api/queues/objects/add', { method: 'POST', body, headers: { ...basic, ...crossSite, 'Content-Type': 'text/plain' } });
    expect(response.status).toBe(403);
    expect((await errorOf(response)).code).toBe('FORBIDDEN');
  });

  it('the board API takes a body only as application/json', async () => {
    const body = JSON.stringify({ name: 'delete', data: { store: 'files', key: 'victim.txt' } });
    const response = await request('/admin/queues/api/queues/objects/add', { method: 'POST', body, headers: { ...basic, 'Content-Type': 'text/plain' } });
    expect(response.status).toBe(415);
  });

  it('a write whose Origin is another site is refused; its own origin and no Origin pass', async () => {
    const path = '/v1/stores/files/objects/csrf/origin.txt';
    const foreign = await request(path, { method: 'PUT', body: 'owned', headers: { ...bearer, Origin: 'http://evil.example' } });
    expect(foreign.status).toBe(403);
    const opaque = await request(path, { method: 'PUT', body: 'owned', headers: { ...bearer, Origin: 'null' } });
    expect(opaque.status).toBe(403);
    expect((await request(path, { method: 'PUT', body: 'mine', headers: { ...bearer, Origin: 'http://localhost' } })).status).toBe(202);
    expect((await request(path, { method: 'PUT', body: 'mine', headers: bearer })).status).toBe(202);
  });

  it('Sec-Fetch-Site: cross-site refuses a write even without Origin', async () => {
    const response = await request('/v1/stores/files/objects/csrf/fetch-site.txt', { method: 'DELETE', headers: { ...bearer, 'Sec-Fetch-Site': 'cross-site' } });
    expect(response.status).toBe(403);
  });

  it('a signed PUT URL may be used from another site', async () => {
    const url = service.deps.signer.sign({ method: 'PUT', store: 'files', key: 'csrf/signed.txt', expires: Math.floor(Date.now() / 1000) + 60 });
    const response = await request(`${url}&wait=true`, { method: 'PUT', body: 'uploaded', headers: crossSite });
    expect(response.status, await response.clone().text()).toBe(200);
  });

  it('maintenance refuses a body that is not sent as application/json', async () => {
    const response = await request('/v1/maintenance/cleanup', { method: 'POST', body: '{}', headers: { ...bearer, 'Content-Type': 'text/plain' } });
    expect(response.status).toBe(415);
    const json = await request('/v1/maintenance/cleanup', { method: 'POST', body: '{}', headers: { ...bearer, 'Content-Type': 'application/json' } });
    expect(json.status).toBe(202);
  });
});

describe('without API_TOKENS', () => {
  const open = () => createApp({ ...service.deps, config: { ...service.deps.config, apiTokens: [] } });

  it('a Host that is not loopback (DNS rebinding) is refused, saying why', async () => {
    const response = await open().request('http://rebind.evil.example:3927/v1/stores/files/objects');
    expect(response.status).toBe(403);
    expect((await errorOf(response)).message).toContain('API_TOKENS is not set: only loopback Host names are served');
  });

  it('loopback Host names are served, with any port', async () => {
    const app = open();
    for (const origin of ['http://localhost', 'http://127.0.0.1:3927', 'http://[::1]:8080']) {
      expect((await app.request(`${origin}/health`)).status, origin).toBe(200);
    }
  });
});

describe('served objects do not run on the API origin', () => {
  const html = '<script>alert(document.domain)</script>';

  beforeAll(async () => {
    const put = await request('/v1/stores/files/objects/xss/page.html?wait=true', { method: 'PUT', body: html, headers: { ...bearer, 'Content-Type': 'text/html' } });
    expect(put.status).toBe(200);
  });

  it('GET and HEAD carry nosniff and a sandbox policy', async () => {
    for (const method of ['GET', 'HEAD']) {
      const response = await request('/v1/stores/files/objects/xss/page.html', { method, headers: bearer });
      expect(response.status).toBe(200);
      expect(response.headers.get('x-content-type-options')).toBe('nosniff');
      expect(response.headers.get('content-security-policy')).toBe('sandbox');
    }
  });

  it('a signed GET is an attachment, with the same headers', async () => {
    const url = service.deps.signer.sign({ method: 'GET', store: 'files', key: 'xss/page.html', expires: Math.floor(Date.now() / 1000) + 60 });
    const response = await request(url);
    expect(response.status).toBe(200);
    expect(await response.text()).toBe(html);
    expect(response.headers.get('content-disposition')).toBe('attachment');
    expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    expect(response.headers.get('content-security-policy')).toBe('sandbox');
  });
});

describe('/ready', () => {
  it('without a token answers each part\'s status and no detail', async () => {
    const body = (await (await request('/ready')).json()) as { status: string; redis: Record<string, unknown>; stores: Record<string, Record<string, unknown>> };
    expect(body.status).toBe('ok');
    expect(body.redis).toEqual({ status: 'ok' });
    expect(body.stores.files).toEqual({ status: 'ok' });
  });

  it('with a token answers the details', async () => {
    const body = (await (await request('/ready', { headers: bearer })).json()) as { redis: Record<string, unknown>; stores: Record<string, Record<string, unknown>> };
    expect(body.redis).toMatchObject({ status: 'ok', detail: 'takes writes' });
    expect(body.stores.files).toHaveProperty('detail');
  });
});

describe('on the wire', () => {
  let server: HttpServer;
  const IDLE_MS = 300;

  beforeAll(async () => {
    server = await listen(createApp({ ...service.deps, bodyIdleTimeoutMs: IDLE_MS }), { host: '127.0.0.1', port: 0, apiTokens: [TOKEN] }, quietLog);
  });
  afterAll(async () => {
    await server?.close();
  });

  it('a maintenance body that stops arriving is answered 408', async () => {
    const { port } = new URL(server.url);
    const socket = net.connect(Number(port), '127.0.0.1');
    let answer = '';
    socket.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined);
    socket.write(
      `POST /v1/maintenance/cleanup HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${TOKEN}\r\n` +
        'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"store":',
    );
    const started = Date.now();
    await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 5_000))]);
    socket.destroy();
    expect(answer.split('\r\n')[0]).toBe('HTTP/1.1 408 Request Timeout');
    expect(Date.now() - started).toBeLessThan(5_000);
  });
});

describe('event streams', () => {
  it('past sseMaxStreams open streams, one more is 503 with Retry-After until one ends', async () => {
    const app = createApp({ ...service.deps, sseMaxStreams: 2 });
    const open = () => app.request('/v1/events', { headers: bearer });
    const first = await open();
    const second = await open();
    expect([first.status, second.status]).toEqual([200, 200]);
    const refused = await open();
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).not.toBeNull();
    expect((await errorOf(refused)).code).toBe('SERVICE_UNAVAILABLE');

    await first.body!.cancel();
    let again: Response | undefined;
    for (let i = 0; i < 50 && again?.status !== 200; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      again = await open();
      if (again.status !== 200) await again.body?.cancel();
    }
    expect(again?.status).toBe(200);
    await again!.body!.cancel();
    await second.body!.cancel();
  });
});
