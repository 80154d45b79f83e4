/**
 * Promise 5: nobody gets in without a token. Every route of the route table answering 401 without a token and with
 * a wrong one is `test/api/system.test.ts` (generated from `routeTable`, so new routes are covered); here, over a
 * real HTTP server: near-miss tokens, the comparison being constant-time by construction, signed URLs refusing
 * every tampering and expiry, and webhooks arriving signed.
 */
import { createHmac } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

// The real node:crypto, with its comparison and hashing observed: the unit tests below look at how tokens are
// compared, not at how long it takes (timings have no place in tests).
const observed = vi.hoisted(() => ({ compares: [] as [number, number][], hashes: [] as string[] }));
vi.mock('node:crypto', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:crypto')>();
  return {
    ...actual,
    timingSafeEqual: (a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView) => {
      observed.compares.push([a.byteLength, b.byteLength]);
      return actual.timingSafeEqual(a, b);
    },
    createHash: (algorithm: string, options?: object) => {
      observed.hashes.push(algorithm);
      return actual.createHash(algorithm, options as never);
    },
    hash: (algorithm: string, data: string | NodeJS.ArrayBufferView, encoding?: 'hex' | 'base64' | 'buffer') => {
      observed.hashes.push(algorithm);
      return actual.hash(algorithm, data as never, encoding as never);
    },
  };
});

const { TokenSet } = await import('../../src/api/auth.js');
const { createApp } = await import('../../src/api/app.js');
const { routeTable } = await import('../../src/api/openapi.js');
const { listen } = await import('../../src/api/server.js');
const { UrlSigner } = await import('../../src/api/signing.js');
const { quietLog, startTestService } = await import('../support/service.js');
const { reportFigures, waitUntil } = await import('./fixtures/processes.js');
const { rawRequest } = await import('./fixtures/raw-http.js');

const TOKEN = 'reliability-auth-token-0123456789';
const SIGNING_SECRET = 'reliability-url-signing-secret';
const WEBHOOK_SECRET = 'reliability-webhook-secret';
const bearer = { Authorization: `Bearer ${TOKEN}` };

describe('token comparison is constant-time by construction', () => {
  it('hashes the guess and compares fixed-length digests with timingSafeEqual, whatever its length', () => {
    const tokens = new TokenSet(['correct-horse-battery-staple', 'second-token']);
    for (const guess of ['x', 'correct-horse-battery-stapl', 'c'.repeat(10_000), 'correct-horse-battery-staple']) {
      observed.compares.length = 0;
      observed.hashes.length = 0;
      tokens.accepts(guess);
      expect(observed.hashes, guess.slice(0, 30)).toEqual(['sha256']);
      // One comparison per configured token, even after a match (no early exit), always 32 against 32 bytes.
      expect(observed.compares, guess.slice(0, 30)).toEqual([
        [32, 32],
        [32, 32],
      ]);
    }
    expect(tokens.accepts('correct-horse-battery-staple')).toBe(true);
    expect(tokens.accepts('second-token')).toBe(true);
    expect(tokens.accepts('correct-horse-battery-stapl')).toBe(false);
  });

  it('signed URL signatures are compared with timingSafeEqual on fixed-length digests', () => {
    const signer = new UrlSigner(SIGNING_SECRET);
    const grant = { method: 'GET' as const, store: 'files', key: 'a', expires: 4_000_000_000 };
    observed.compares.length = 0;
    expect(signer.refusal(grant, 'f'.repeat(64))).toBe('signature does not match');
    expect(observed.compares).toEqual([[32, 32]]);
  });
});

describe('over real HTTP', () => {
  let service: Awaited<ReturnType<typeof startTestService>>;
  let server: Awaited<ReturnType<typeof listen>>;
  let base: string;
  const deliveries: { headers: http.IncomingHttpHeaders; body: string }[] = [];
  const receiver = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      deliveries.push({ headers: request.headers, body: Buffer.concat(chunks).toString('utf8') });
      response.end('ok');
    });
  });

  beforeAll(async () => {
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    const hook = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
    service = await startTestService('rel-auth', {
      STORES: 'files:disk,other:ram',
      API_TOKENS: TOKEN,
      URL_SIGNING_SECRET: SIGNING_SECRET,
      WEBHOOK_URLS: hook,
      WEBHOOK_SECRET,
    });
    server = await listen(createApp(service.deps), { host: '127.0.0.1', port: 0, apiTokens: [TOKEN] }, quietLog);
    base = server.url;
    for (const [store, key] of [
      ['files', 'docs/report.txt'],
      ['files', 'docs/other.txt'],
      ['other', 'docs/report.txt'],
    ] as const) {
      const put = await fetch(`${base}/v1/stores/${store}/objects/${key}?wait=true`, { method: 'PUT', body: `${store}:${key}`, headers: bearer });
      expect(put.status).toBe(200);
    }
  }, 60_000);

  afterAll(async () => {
    await server?.close();
    await service?.close();
    await new Promise((resolve) => receiver.close(resolve));
  });

  it('near-miss tokens get 401 on every protected route of the route table', async () => {
    const nearMisses = [TOKEN.slice(0, -1), `${TOKEN}x`, TOKEN.toUpperCase(), `${TOKEN.slice(0, -1)}8`, ` ${TOKEN}x`, ''];
    let tried = 0;
    for (const route of routeTable.filter((r) => r.auth === 'bearer')) {
      const path = route.path.replace('{store}', 'files').replace('{key}', 'docs/report.txt').replace('{versionId}', 'v1').replace('{id}', 'objects-x');
      for (const token of nearMisses) {
        const response = await rawRequest(base, path, { method: route.method, headers: { Authorization: `Bearer ${token}` } });
        expect(response.status, `${route.method} ${path} with ${JSON.stringify(token)}`).toBe(401);
        tried++;
      }
    }
    const board = await rawRequest(base, '/admin/queues', { headers: { Authorization: `Basic ${Buffer.from(`x:${TOKEN.slice(0, -1)}`).toString('base64')}` } });
    expect(board.status).toBe(401);
    reportFigures('5 nobody without a token', { nearMissRequests: tried + 1 });
  });

  async function signedUrl(store: string, key: string, method: 'GET' | 'PUT', expires = 600): Promise<URL> {
    const response = await fetch(`${base}/v1/stores/${store}/objects/${key}/url?method=${method}&expires=${expires}`, { headers: bearer });
    expect(response.status).toBe(200);
    return new URL(((await response.json()) as { url: string }).url);
  }

  const pathOf = (url: URL) => `${url.pathname}${url.search}`;

  it('a signed GET URL works without a token and refuses every tampering with 403', async () => {
    const url = await signedUrl('files', 'docs/report.txt', 'GET');
    const good = await rawRequest(base, pathOf(url));
    expect(good.status).toBe(200);
    expect(good.body.toString()).toBe('files:docs/report.txt');

    const signature = url.searchParams.get('signature')!;
    const flipped = `${signature.slice(0, -1)}${signature.endsWith('0') ? '1' : '0'}`;
    const query = (changes: Record<string, string | null>) => {
      const params = new URLSearchParams(url.search);
      for (const [name, value] of Object.entries(changes)) if (value === null) params.delete(name);
      else params.set(name, value);
      return `?${params}`;
    };
    const tampered: [string, string, string?][] = [
      ['another key', `/v1/signed/files/docs/other.txt${url.search}`],
      ['another store', `/v1/signed/other/docs/report.txt${url.search}`],
      ['a longer key', `/v1/signed/files/docs/report.txt/more${url.search}`],
      ['a later expiry', `${url.pathname}${query({ expires: String(Number(url.searchParams.get('expires')) + 3600) })}`],
      ['one signature digit changed', `${url.pathname}${query({ signature: flipped })}`],
      ['an upper-case signature', `${url.pathname}${query({ signature: signature.toUpperCase() })}`],
      ['no signature', `${url.pathname}${query({ signature: null })}`],
      ['no expiry', `${url.pathname}${query({ expires: null })}`],
      ['method PUT in the query', `${url.pathname}${query({ method: 'PUT' })}`],
      ['a GET URL used to PUT', pathOf(url), 'PUT'],
    ];
    for (const [what, path, method = 'GET'] of tampered) {
      const response = await rawRequest(base, path, { method, body: method === 'PUT' ? 'overwritten' : undefined });
      expect(response.status, what).toBe(403);
      expect(JSON.parse(response.body.toString()).error.code, what).toBe('FORBIDDEN');
    }
    expect(await (await fetch(`${base}/v1/stores/files/objects/docs/report.txt`, { headers: bearer })).text()).toBe('files:docs/report.txt');
  });

  it('a signed URL spelling its store percent-encoded still names the same key', async () => {
    const url = await signedUrl('files', 'docs/report.txt', 'GET');
    const response = await rawRequest(base, `${url.pathname.replace('/signed/files/', '/signed/%66iles/')}${url.search}`);
    expect(response.status).toBe(200);
    expect(response.body.toString()).toBe('files:docs/report.txt');
  });

  it('an expired signed URL is 403, even with a valid signature', async () => {
    const signer = new UrlSigner(SIGNING_SECRET);
    const now = Math.floor(Date.now() / 1000);
    const fresh = await rawRequest(base, signer.sign({ method: 'GET', store: 'files', key: 'docs/report.txt', expires: now + 60 }));
    expect(fresh.status).toBe(200); // the test's signer is the server's
    const expired = await rawRequest(base, signer.sign({ method: 'GET', store: 'files', key: 'docs/report.txt', expires: now - 1 }));
    expect(expired.status).toBe(403);
    expect(JSON.parse(expired.body.toString()).error.message).toMatch(/expired/);

    const short = await signedUrl('files', 'docs/report.txt', 'GET', 1);
    await waitUntil(async () => (await rawRequest(base, pathOf(short))).status === 403, { timeoutMs: 5_000, intervalMs: 250, what: 'the 1 s URL to expire' });
  });

  it('a signed PUT URL writes without a token; a tampered one writes nothing', async () => {
    const url = await signedUrl('files', 'uploads/new.txt', 'PUT');
    const tampered = await rawRequest(base, `/v1/signed/files/uploads/elsewhere.txt${url.search}`, { method: 'PUT', body: 'sneaky' });
    expect(tampered.status).toBe(403);
    const put = await rawRequest(base, pathOf(url), { method: 'PUT', body: 'uploaded' });
    expect(put.status).toBe(202);
    await waitUntil(async () => (await fetch(`${base}/v1/stores/files/objects/uploads/new.txt`, { headers: bearer })).status === 200, { what: 'the signed upload' });
    expect((await fetch(`${base}/v1/stores/files/objects/uploads/elsewhere.txt`, { headers: bearer })).status).toBe(404);
  });

  it('webhooks arrive signed with HMAC-SHA256 of the exact body', async () => {
    const put = await fetch(`${base}/v1/stores/files/objects/hooked.txt?wait=true`, { method: 'PUT', body: 'hook me', headers: bearer });
    expect(put.status).toBe(200);
    const delivery = await waitUntil(() => deliveries.find((d) => d.body.includes('"key":"hooked.txt"')), { timeoutMs: 30_000, what: 'the webhook' });
    const header = delivery.headers['x-kyozo-signature'];
    const hmac = (body: string, secret: string) => `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
    expect(header).toBe(hmac(delivery.body, WEBHOOK_SECRET));
    expect(header).not.toBe(hmac(delivery.body, 'another secret'));
    expect(header).not.toBe(hmac(delivery.body.replace('hooked.txt', 'hooked.tx_'), WEBHOOK_SECRET));
    expect(JSON.parse(delivery.body)).toMatchObject({ type: 'object.written', store: 'files', key: 'hooked.txt' });
  });
});
