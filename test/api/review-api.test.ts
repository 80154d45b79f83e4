/**
 * What the HTTP API promises about requests it refuses: what is checked before the body is read, which status a
 * method a resource does not take gets, how text in headers is read, and which code each refusal carries.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/api/app.js';
import { parseAuthor } from '../../src/api/routes/objects.js';
import { listen, type HttpServer } from '../../src/api/server.js';
import { quietLog, startTestService, type TestService } from '../support/service.js';

const TOKEN = 'review-api-token';
const auth = { Authorization: `Bearer ${TOKEN}` };
const CONTINUE = 'HTTP/1.1 100 Continue\r\n\r\n';

let service: TestService;
let server: HttpServer;

beforeAll(async () => {
  service = await startTestService('api-review', { API_TOKENS: TOKEN, STORES: 'files:disk,mem:ram,docs:git' });
  server = await listen(createApp(service.deps), { host: '127.0.0.1', port: 0, apiTokens: [TOKEN] }, quietLog);
}, 60_000);
afterAll(async () => {
  await server?.close();
  await service?.close();
});

const request = (path: string, init: RequestInit = {}) => service.app.request(path, { ...init, headers: { ...auth, ...init.headers } });
const object = (store: string, key: string) => `/v1/stores/${store}/objects/${key}`;

async function errorOf(response: Response): Promise<{ code: string; message: string }> {
  return ((await response.json()) as { error: { code: string; message: string } }).error;
}

/** What a client that sends raw UTF-8 in a header puts on the wire, as Node hands it over: a character per byte. */
const rawUtf8 = (text: string) => Buffer.from(text, 'utf8').toString('latin1');

/**
 * Sends a request head with `Expect: 100-continue` and never its body: the server's answer to the head alone, and
 * whether it asked for the body (it would then wait for it; the exchange ends after `settleMs`).
 */
function headOnly(head: string, settleMs = 1_500): Promise<{ answer: string; askedForBody: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(new URL(server.url).port), '127.0.0.1');
    let answer = '';
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ answer, askedForBody: answer.startsWith(CONTINUE) });
    };
    const timer = setTimeout(done, settleMs);
    socket.on('data', (chunk) => (answer += chunk.toString('latin1')));
    socket.on('end', done);
    socket.on('error', reject);
    socket.on('connect', () => socket.write(head));
  });
}

function expectingContinue(method: string, path: string, headers: Record<string, string> = {}): string {
  const lines = Object.entries({ Host: 'test', ...auth, 'Content-Length': String(2 * 1024 * 1024), Expect: '100-continue', ...headers });
  return `${method} ${path} HTTP/1.1\r\n${lines.map(([name, value]) => `${name}: ${value}\r\n`).join('')}\r\n`;
}

describe('refused on its headers, before the body is asked for', () => {
  const longKey = 'k'.repeat(300);

  it("a body larger than its store takes (git: 1 GiB) though under MAX_OBJECT_BYTES is 413 with no 100 Continue", async () => {
    const twoGiB = { 'Content-Length': String(2 * 1024 ** 3) };
    const git = await headOnly(expectingContinue('PUT', object('docs', 'too/large'), twoGiB));
    expect(git.askedForBody).toBe(false);
    expect(git.answer).toMatch(/^HTTP\/1\.1 413 /);
    expect(git.answer).toMatch(/what this store takes \(1073741824 bytes\)/);
    // The same size for a store without a limit of its own is asked for.
    expect((await headOnly(expectingContinue('PUT', object('mem', 'not/too/large'), twoGiB), 500)).askedForBody).toBe(true);
  });

  it.each([
    ['PUT of an object', 'PUT', object('mem', 'early/put'), { 'Idempotency-Key': longKey }, /Idempotency-Key/],
    ['POST of a version', 'POST', `${object('mem', 'early/version')}/versions`, { 'Idempotency-Key': longKey }, /Idempotency-Key/],
    ['a signed PUT', 'PUT', 'signed', { 'Idempotency-Key': longKey }, /Idempotency-Key/],
    ['PUT ?wait=1', 'PUT', `${object('mem', 'early/wait')}?wait=1`, {}, /\?wait/],
  ])('%s with a malformed Idempotency-Key or flag is 400 with no 100 Continue', async (_name, method, target, headers, message) => {
    const expires = Math.floor(Date.now() / 1000) + 60;
    const path = target === 'signed' ? service.deps.signer.sign({ method: 'PUT', store: 'mem', key: 'early/signed', expires }) : target;
    const { answer, askedForBody } = await headOnly(expectingContinue(method, path, headers));
    expect(askedForBody).toBe(false);
    expect(answer).toMatch(/^HTTP\/1.1 400 /);
    const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as { error: { code: string; message: string } };
    expect(body.error).toMatchObject({ code: 'BAD_REQUEST', message: expect.stringMatching(message) });
    expect((await service.stagingProvider.list()).items).toEqual([]);
  });
});

describe('refused before routing, over real HTTP (session 11)', () => {
  it("a literal backslash in the path and a Host that is no host get the API's JSON error and a request id", async () => {
    for (const [head, code] of [
      [`PUT /v1/stores/files/objects/a\\b HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Length: 1\r\n\r\nx`, 'INVALID_KEY'],
      [`GET /v1/stores/files/objects/a HTTP/1.1\r\nHost: a@localhost\r\nAuthorization: Bearer ${TOKEN}\r\n\r\n`, 'BAD_REQUEST'],
    ] as const) {
      const { answer } = await headOnly(head, 500);
      const [status, ...lines] = answer.split('\r\n');
      expect(status).toBe('HTTP/1.1 400 Bad Request');
      expect(lines).toContainEqual(expect.stringMatching(/^X-Request-Id: [0-9a-f-]{36}$/i));
      expect(lines).toContainEqual('Content-Type: application/json');
      expect(answer).toContain(`{"error":{"code":"${code}"`);
    }
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
  });
});

describe('a method a resource does not answer is 405 with Allow; a path that names nothing is 404', () => {
  it('the object list, with or without its trailing slash, answers GET, HEAD and DELETE (with a prefix) and refuses the rest with 405', async () => {
    await request(`${object('mem', 'listed/a')}?wait=true`, { method: 'PUT', body: 'x' });
    for (const path of ['/v1/stores/mem/objects', '/v1/stores/mem/objects/']) {
      const list = await request(`${path}?prefix=listed/`);
      expect(list.status, path).toBe(200);
      expect(((await list.json()) as { items: { key: string }[] }).items.map((item) => item.key), path).toEqual(['listed/a']);
      expect((await request(path, { method: 'HEAD' })).status, path).toBe(200);
      for (const method of ['PUT', 'POST', 'PATCH']) {
        const response = await request(path, { method, body: 'x' });
        expect(response.status, `${method} ${path}`).toBe(405);
        expect(response.headers.get('allow'), `${method} ${path}`).toBe('GET, HEAD, DELETE');
        expect((await errorOf(response)).code).toBe('METHOD_NOT_ALLOWED');
      }
      // Never a whole store: without a prefix (or an empty one) the DELETE is refused.
      for (const query of ['', '?prefix=']) {
        const refused = await request(`${path}${query}`, { method: 'DELETE' });
        expect(refused.status, `DELETE ${path}${query}`).toBe(400);
        expect((await errorOf(refused)).message).toContain('?prefix=, which is required');
      }
    }
    expect((await service.deps.stores.get('mem')!.stat('listed/a')).size).toBe(1);
  });

  it('PATCH and OPTIONS of an object or its parts are 405 with what that part answers', async () => {
    for (const [path, allow] of [
      [object('mem', 'docs/readme.md'), 'GET, HEAD, PUT, DELETE'],
      [`${object('mem', 'docs/readme.md')}/versions`, 'GET, HEAD, POST'],
      [`${object('mem', 'docs/readme.md')}/versions/v1/restore`, 'POST'],
    ] as const) {
      for (const method of ['PATCH', 'OPTIONS']) {
        const response = await request(path, { method });
        expect(response.status, `${method} ${path}`).toBe(405);
        expect(response.headers.get('allow'), `${method} ${path}`).toBe(allow);
      }
    }
  });

  it.each([
    ['POST', '/v1/stores', 'GET, HEAD'],
    ['PUT', '/v1/stores/mem/stats', 'GET, HEAD'],
    ['DELETE', '/v1/jobs/objects-00000000-0000-0000-0000-000000000000', 'GET, HEAD'],
    ['GET', '/v1/maintenance/backup', 'POST'],
    ['POST', '/v1/events', 'GET, HEAD'],
    ['PATCH', '/v1/signed/mem/a', 'GET, HEAD, PUT'],
    ['POST', '/health', 'GET, HEAD'],
  ])('%s %s is 405 with Allow: %s', async (method, path, allow) => {
    const response = await request(path, { method });
    expect(response.status).toBe(405);
    expect(response.headers.get('allow')).toBe(allow);
    expect(await errorOf(response)).toMatchObject({ code: 'METHOD_NOT_ALLOWED', message: expect.stringContaining(method) });
  });

  it.each([
    ['GET', '/v1/nothing-here'],
    ['GET', '/v1/stores/mem'],
    ['POST', '/v1/maintenance/no-such-task'],
    ['GET', '/v1/jobs/a/b'],
  ])('%s %s names no resource: 404', async (method, path) => {
    const response = await request(path, { method });
    expect(response.status).toBe(404);
    expect((await errorOf(response)).code).toBe('NOT_FOUND');
  });

  it("keeps the API's router Hono's RegExpRouter", async () => {
    await request('/v1/stores');
    expect(service.app.router.name).toBe('SmartRouter + RegExpRouter');
  });
});

describe('text in X-Meta-*, X-Version-Message and X-Author', () => {
  it('raw UTF-8 in X-Meta-* is stored as the text it is, and read back in the utf-8 form', async () => {
    const response = await request(`${object('mem', 'utf8/raw')}?wait=true`, { method: 'PUT', body: '1', headers: { 'X-Meta-City': rawUtf8('Köln 東京') } });
    expect(response.status).toBe(200);
    expect((await service.deps.stores.get('mem')!.stat('utf8/raw')).metadata.city).toBe('Köln 東京');
    const head = await request(object('mem', 'utf8/raw'), { method: 'HEAD' });
    expect(head.headers.get('x-meta-city')).toBe(`utf-8''${encodeURIComponent('Köln 東京')}`);
  });

  it('raw UTF-8 in X-Version-Message and X-Author makes the version carry that text', async () => {
    const response = await request(`${object('files', 'utf8/version')}/versions?wait=true`, {
      method: 'POST',
      body: '1',
      headers: { 'X-Version-Message': rawUtf8('café'), 'X-Author': rawUtf8('Adà <ada@x>') },
    });
    expect(response.status, await response.clone().text()).toBe(200);
    expect(await response.json()).toMatchObject({ message: 'café', author: { name: 'Adà', email: 'ada@x' } });
  });

  it('bytes that are not UTF-8 are refused with 400 naming the header and the utf-8 form; nothing is written', async () => {
    for (const [name, value] of [
      ['X-Meta-City', 'K\xf6ln'],
      ['X-Version-Message', 'caf\xe9'],
      ['X-Author', 'Ad\xe0 <ada@x>'],
      ['X-Meta-City', "utf-8''K\xc3\xb6ln"], // the utf-8 form is percent-encoded ASCII
    ] as const) {
      const response = await request(`${object('files', 'utf8/latin1')}/versions?wait=true`, { method: 'POST', body: '1', headers: { [name]: value } });
      expect(response.status, `${name}: ${value}`).toBe(400);
      expect(await errorOf(response), `${name}: ${value}`).toMatchObject({ code: 'BAD_REQUEST', message: expect.stringMatching(new RegExp(`${name}.*utf-8''`, 'i')) });
    }
    await expect(service.deps.stores.get('files')!.stat('utf8/latin1')).rejects.toThrow();
  });

  it("the utf-8'' form keeps working", async () => {
    const response = await request(`${object('mem', 'utf8/encoded')}?wait=true`, { method: 'PUT', body: '1', headers: { 'X-Meta-City': `utf-8''${encodeURIComponent('Köln')}` } });
    expect(response.status).toBe(200);
    expect((await service.deps.stores.get('mem')!.stat('utf8/encoded')).metadata.city).toBe('Köln');
  });

  it('X-Author loses only the spaces and tabs around its parts, not a no-break space of the name', () => {
    expect(parseAuthor(rawUtf8(' Ada\u00a0 <ada@x> '))).toEqual({ name: 'Ada\u00a0', email: 'ada@x' });
    expect(parseAuthor(`utf-8''${encodeURIComponent('\u00a0Ada\u00a0')}`)).toEqual({ name: '\u00a0Ada\u00a0' });
    expect(parseAuthor(' \t ')).toBeUndefined();
  });
});

describe('signed URLs', () => {
  it('a tampered, expired or misused signature is 403 FORBIDDEN with the JSON error, and no challenge', async () => {
    await request(`${object('mem', 'signed/a')}?wait=true`, { method: 'PUT', body: 'x' });
    const expires = Math.floor(Date.now() / 1000) + 60;
    const valid = service.deps.signer.sign({ method: 'GET', store: 'mem', key: 'signed/a', expires });
    const refused: [string, string, RequestInit?][] = [
      ['tampered', valid.replace(/signature=[0-9a-f]+/, `signature=${'0'.repeat(64)}`)],
      ['expired', service.deps.signer.sign({ method: 'GET', store: 'mem', key: 'signed/a', expires: Math.floor(Date.now() / 1000) - 1 })],
      ['another key', valid.replace('signed/a', 'signed/b')],
      ['another method', valid, { method: 'PUT', body: 'y' }],
      ['no signature', '/v1/signed/mem/signed/a'],
    ];
    for (const [what, path, init] of refused) {
      const response = await service.app.request(path, init);
      expect(response.status, what).toBe(403);
      expect(response.headers.get('www-authenticate'), what).toBeNull();
      expect(await errorOf(response), what).toMatchObject({ code: 'FORBIDDEN', message: expect.any(String) });
    }
    expect((await service.app.request(valid)).status).toBe(200);
  });
});

describe('Redis down', () => {
  it('a mutation is 503 SERVICE_UNAVAILABLE with Retry-After, as job status and events are', async () => {
    const broken = await startTestService('api-review-redis-down', {}, { worker: false });
    broken.deps.redis.disconnect();
    try {
      for (const [path, init] of [
        ['/v1/stores/files/objects/while/down', { method: 'PUT', body: 'x' }],
        ['/v1/stores/files/objects/while/down', { method: 'DELETE' }],
        ['/v1/jobs/objects-00000000-0000-0000-0000-000000000000', {}],
        ['/v1/events', {}],
      ] as const) {
        const response = await broken.app.request(path, init);
        expect(response.status, `${init.method ?? 'GET'} ${path}`).toBe(503);
        expect(response.headers.get('retry-after'), `${init.method ?? 'GET'} ${path}`).not.toBeNull();
        expect((await errorOf(response)).code, `${init.method ?? 'GET'} ${path}`).toBe('SERVICE_UNAVAILABLE');
      }
    } finally {
      await broken.close();
    }
  });
});

describe('GET /v1/events', () => {
  it('an invalid resume point is reported under the name the client used', async () => {
    const since = await errorOf(await request('/v1/events?since=abc'));
    expect(since.message).toMatch(/^\?since must be an event id/);
    const header = await errorOf(await request('/v1/events', { headers: { 'Last-Event-ID': 'abc' } }));
    expect(header.message).toMatch(/^Last-Event-ID must be an event id/);
  });
});

describe('boolean query flags', () => {
  it('?wait other than true or false is 400 naming it, and nothing is written', async () => {
    for (const wait of ['1', 'yes', '']) {
      const response = await request(`${object('mem', 'flags/wait')}?wait=${wait}`, { method: 'PUT', body: 'x' });
      expect(response.status, wait).toBe(400);
      expect(await errorOf(response), wait).toMatchObject({ code: 'BAD_REQUEST', message: expect.stringMatching(/^\?wait must be true or false/) });
    }
    expect((await request(`${object('mem', 'flags/wait')}?wait=false`, { method: 'PUT', body: 'x' })).status).toBe(202);
  });

  it('DELETE ?allVersions other than true or false is 400 and deletes nothing; false keeps the versions', async () => {
    const files = service.deps.stores.get('files')!;
    await request(`${object('files', 'flags/all')}?wait=true`, { method: 'PUT', body: 'x' });
    await request(`${object('files', 'flags/all')}/versions?wait=true`, { method: 'POST', body: 'v1' });
    const refused = await request(`${object('files', 'flags/all')}?allVersions=1&wait=true`, { method: 'DELETE' });
    expect(refused.status).toBe(400);
    expect((await errorOf(refused)).message).toMatch(/^\?allVersions must be true or false/);
    await expect(files.stat('flags/all')).resolves.toMatchObject({ key: 'flags/all' });

    expect((await request(`${object('files', 'flags/all')}?allVersions=false&wait=true`, { method: 'DELETE' })).status).toBe(200);
    expect((await files.listVersions('flags/all')).items.length).toBeGreaterThan(0);
  });

  it('a maintenance ?wait is checked before its body is read', async () => {
    const response = await request('/v1/maintenance/cleanup?wait=1', { method: 'POST', body: 'not json' });
    expect(response.status).toBe(400);
    expect((await errorOf(response)).message).toMatch(/^\?wait must be true or false/);
  });
});
