import { PassThrough, Readable } from 'node:stream';
import { pino } from 'pino';
import { createApp } from '../../src/api/app.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EnqueueUncertainError } from '../../src/jobs/queue.js';
import { sha256Hex } from '../../src/providers/body.js';
import { waitFor } from '../jobs/fixtures/pipeline.js';
import { startTestService, type TestService } from '../support/service.js';

let service: TestService;

beforeAll(async () => {
  service = await startTestService('api-bad-input', { MAX_OBJECT_BYTES: String(64 * 1024), STAGING_INLINE_MAX: '1024' });
});
afterAll(async () => {
  await service?.close();
});

/** `message`: what the client is told, where the default wording of a check would not say it. */
const cases: { name: string; path: string; init?: RequestInit; status: number; code: string; message?: RegExp }[] = [
  { name: 'empty segment in a key', path: '/v1/stores/files/objects/a//b', init: { method: 'PUT', body: 'x' }, status: 400, code: 'INVALID_KEY' },
  { name: 'NUL in a key', path: '/v1/stores/files/objects/a%00b', init: { method: 'PUT', body: 'x' }, status: 400, code: 'INVALID_KEY' },
  { name: 'encoded slash making an empty segment', path: '/v1/stores/files/objects/a%2F%2Fb', status: 400, code: 'INVALID_KEY' },
  { name: 'encoded dot-dot inside one segment', path: '/v1/stores/files/objects/x/..%2F..%2Fetc', status: 400, code: 'INVALID_KEY' },
  { name: 'backslash', path: '/v1/stores/files/objects/a%5Cb', status: 400, code: 'INVALID_KEY' },
  { name: 'broken percent-encoding', path: '/v1/stores/files/objects/a%E0%A4%A', status: 400, code: 'INVALID_KEY' },
  { name: 'overlong UTF-8 (0xC0 0xAE is not a dot)', path: '/v1/stores/files/objects/a/%C0%AE%C0%AE/b', status: 400, code: 'INVALID_KEY' },
  { name: 'key over 1,024 bytes', path: `/v1/stores/files/objects/${'k'.repeat(1025)}`, init: { method: 'PUT', body: 'x' }, status: 400, code: 'INVALID_KEY' },
  { name: 'unknown store (read)', path: '/v1/stores/nope/objects/a', status: 404, code: 'NOT_FOUND' },
  { name: 'unknown store (write)', path: '/v1/stores/nope/objects/a', init: { method: 'PUT', body: 'x' }, status: 404, code: 'NOT_FOUND' },
  { name: 'missing object', path: '/v1/stores/files/objects/not/there', status: 404, code: 'NOT_FOUND' },
  { name: 'unknown route', path: '/v1/nothing-here', status: 404, code: 'NOT_FOUND' },
  { name: 'unknown job', path: '/v1/jobs/objects-does-not-exist', status: 404, code: 'NOT_FOUND' },
  { name: 'malformed job id', path: '/v1/jobs/..%2F..', status: 404, code: 'NOT_FOUND' },
  {
    name: 'oversized body by Content-Length',
    path: '/v1/stores/files/objects/too/big',
    init: { method: 'PUT', body: 'x'.repeat(64 * 1024 + 1) },
    status: 413,
    code: 'PAYLOAD_TOO_LARGE',
  },
  { name: 'list limit out of range', path: '/v1/stores/files/objects?limit=5000', status: 400, code: 'BAD_REQUEST', message: /^limit: expected a whole number from 1 to 1000$/ },
  { name: 'url expiry not a number', path: '/v1/stores/files/objects/a/url?expires=abc', status: 400, code: 'BAD_REQUEST', message: /^expires: expected a whole number of seconds from 1 to \d+$/ },
  { name: 'forged cursor', path: '/v1/stores/files/objects?cursor=bm90LWEtY3Vyc29y', status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'query not percent-encoded UTF-8', path: '/v1/stores/files/objects?cursor=%%%', status: 400, code: 'BAD_REQUEST' },
  { name: 'bad prefix', path: '/v1/stores/files/objects?prefix=a//', status: 400, code: 'INVALID_KEY' },
  { name: 'url with a bad method', path: '/v1/stores/files/objects/a/url?method=DELETE', status: 400, code: 'BAD_REQUEST' },
  { name: 'GET of a restore', path: '/v1/stores/files/objects/a/versions/v1/restore', status: 405, code: 'METHOD_NOT_ALLOWED' },
  { name: 'PUT of versions', path: '/v1/stores/files/objects/a/versions', init: { method: 'PUT', body: 'x' }, status: 405, code: 'METHOD_NOT_ALLOWED' },
  { name: 'DELETE of a url', path: '/v1/stores/files/objects/a/url', init: { method: 'DELETE' }, status: 405, code: 'METHOD_NOT_ALLOWED' },
  { name: 'POST of an object', path: '/v1/stores/files/objects/m/a', init: { method: 'POST', body: 'x' }, status: 405, code: 'METHOD_NOT_ALLOWED' },
  { name: 'bad X-Author', path: '/v1/stores/files/objects/a/versions', init: { method: 'POST', body: 'x', headers: { 'X-Author': '<no-name@x>' } }, status: 400, code: 'BAD_REQUEST' },
  { name: 'bad metadata name', path: '/v1/stores/files/objects/m?wait=true', init: { method: 'PUT', body: 'x', headers: { 'X-Meta-bad.name': 'v' } }, status: 400, code: 'INVALID_ARGUMENT' },
  {
    name: 'metadata name not starting with a letter or digit',
    path: '/v1/stores/files/objects/m?wait=true',
    init: { method: 'PUT', body: 'x', headers: { 'X-Meta-__proto__': 'v' } },
    status: 400,
    code: 'INVALID_ARGUMENT',
    message: /must start with a letter or digit/,
  },
  {
    name: 'a condition on a DELETE',
    path: '/v1/stores/files/objects/m',
    init: { method: 'DELETE', headers: { 'If-Match': '"x"' } },
    status: 501,
    code: 'NOT_SUPPORTED',
    message: /^this DELETE does not support if-match: it takes no condition$/,
  },
  { name: 'gzip content coding (PUT)', path: '/v1/stores/files/objects/coded?wait=true', init: { method: 'PUT', body: 'x', headers: { 'Content-Encoding': 'gzip' } }, status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' },
  { name: 'content coding (new version)', path: '/v1/stores/files/objects/coded/versions', init: { method: 'POST', body: 'x', headers: { 'Content-Encoding': 'br' } }, status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' },
  { name: 'unknown event type', path: '/v1/events?types=object.exploded', status: 400, code: 'BAD_REQUEST' },
  { name: 'bad Last-Event-ID', path: '/v1/events', init: { headers: { 'Last-Event-ID': 'yesterday' } }, status: 400, code: 'BAD_REQUEST' },
];

describe('bad input gets a clear error and the server stays up', () => {
  it('a method a resource does not answer is 405 with the methods it does in Allow (RFC 9110 §15.5.6)', async () => {
    const allowed = async (path: string, method: string) => (await service.app.request(path, { method, body: method === 'GET' ? undefined : 'x' })).headers.get('allow');
    expect(await allowed('/v1/stores/files/objects/a/versions/v1/restore', 'GET')).toBe('POST');
    expect(await allowed('/v1/stores/files/objects/a/versions', 'PUT')).toBe('GET, HEAD, POST');
    expect(await allowed('/v1/stores/files/objects/a/diff', 'POST')).toBe('GET, HEAD');
    expect(await allowed('/v1/stores/files/objects/a', 'POST')).toBe('GET, HEAD, PUT, DELETE');
  });

  it.each(cases)('$name -> $status $code', async ({ path, init, status, code, message }) => {
    const response = await service.app.request(path, init);
    const body = (await response.json()) as { error: { code: string; message: string } };
    expect(response.status).toBe(status);
    expect(body.error.code).toBe(code);
    expect(body.error.message).toMatch(message ?? /./);
    expect(body.error.message).not.toMatch(/\bat .*\.(ts|js):\d+/); // no stack trace
    expect((await service.app.request('/health')).status).toBe(200);
  });

  it('a body in a content coding is refused with Accept-Encoding: identity and nothing written; identity is taken', async () => {
    const coded = await service.app.request('/v1/stores/files/objects/coding/gz?wait=true', { method: 'PUT', body: 'x', headers: { 'Content-Encoding': ' GZIP ' } });
    expect(coded.status).toBe(415);
    expect(coded.headers.get('accept-encoding')).toBe('identity');
    await expect(service.deps.stores.get('files')!.stat('coding/gz')).rejects.toThrow();
    const plain = await service.app.request('/v1/stores/files/objects/coding/plain?wait=true', { method: 'PUT', body: 'x', headers: { 'Content-Encoding': 'identity' } });
    expect(plain.status).toBe(200);
  });

  it('a chunked body that grows past MAX_OBJECT_BYTES is refused with 413 and nothing is written or left staged', async () => {
    const chunks = Array.from({ length: 20 }, () => Buffer.alloc(8 * 1024, 7)); // 160 KiB, no Content-Length
    const body = Readable.toWeb(Readable.from(chunks)) as ReadableStream;
    const response = await service.app.request('/v1/stores/files/objects/chunked/big', { method: 'PUT', body, duplex: 'half' } as RequestInit);
    expect(response.status).toBe(413);
    await expect(service.deps.stores.get('files')!.stat('chunked/big')).rejects.toThrow();
    expect((await service.stagingProvider.list()).items).toEqual([]);
  });

  it('a malformed bytes Range is 416; several ranges or another unit are not refused but answered whole', async () => {
    await service.app.request('/v1/stores/files/objects/r?wait=true', { method: 'PUT', body: 'abc' });
    for (const range of ['bytes=x-y', 'bytes=-', 'bytes=2-1', 'bytes=']) {
      const response = await service.app.request('/v1/stores/files/objects/r', { headers: { Range: range } });
      expect(response.status, range).toBe(416);
    }
    // RFC 9110 §14.2: a Range of an unknown unit must be ignored, and one the server chooses not to serve (here
    // several satisfiable ranges, which would need a multipart answer) may be: both get 200 with the whole object.
    for (const range of ['bytes=0-1,2-3', 'items=0-1']) {
      const response = await service.app.request('/v1/stores/files/objects/r', { headers: { Range: range } });
      expect(response.status, range).toBe(200);
      expect(await response.text(), range).toBe('abc');
    }
  });

  it('an enqueue whose answer was lost (the job may exist) gets 503 and keeps the staged body for that job', async () => {
    const queues = service.deps.queues;
    const enqueue = queues.enqueue.bind(queues);
    // Redis added the job; the connection was cut before its answer came back.
    queues.enqueue = async (name, payload, opts) => {
      await enqueue(name, payload, opts);
      throw new EnqueueUncertainError('cannot enqueue write: Connection is closed.');
    };
    await queues.queue('objects').pause(); // the job runs after the answer, as it would behind a backlog
    try {
      const content = 'y'.repeat(5000);
      const response = await service.app.request('/v1/stores/files/objects/answer/lost', { method: 'PUT', body: content, headers: { 'Idempotency-Key': 'lost-1' } });
      expect(response.status).toBe(503);
    } finally {
      queues.enqueue = enqueue;
      await queues.queue('objects').resume();
    }
    // The job ran with its body, or runs with it still: either way the object arrives.
    await waitFor(async () => (await service.deps.stores.get('files')!.stat('answer/lost').catch(() => undefined))?.etag === sha256Hex('y'.repeat(5000)), {
      what: 'the job of the lost answer wrote its object',
    });
  });

  it("an enqueue that failed before its job was sent (the body's owner note refused) gets 503 and releases the staged body", async () => {
    const broken = await startTestService('api-note-refused', { STAGING_INLINE_MAX: '1024' }, { worker: false });
    try {
      // The owners' hash is another type of key: Redis refuses the note, the job is never sent.
      await broken.deps.redis.set(`${broken.config.queuePrefix}:staging:owners`, 'not a hash');
      const response = await broken.app.request('/v1/stores/files/objects/note/refused', { method: 'PUT', body: 'z'.repeat(5000) });
      expect(response.status).toBe(503);
      // Released after the answer, not before it.
      await waitFor(async () => (await broken.stagingProvider.list()).items.length === 0, { what: 'the staged body released' });
      expect(await broken.deps.queues.queue('objects').getJobCountByTypes('waiting', 'delayed', 'active')).toBe(0);
    } finally {
      await broken.close();
    }
  });

  it('Redis down: a mutation gets 503 with Retry-After and the staged body is released', async () => {
    const broken = await startBrokenService();
    try {
      const response = await broken.app.request('/v1/stores/files/objects/while/down', { method: 'PUT', body: 'x'.repeat(5000) });
      expect(response.status).toBe(503);
      expect(response.headers.get('retry-after')).not.toBeNull();
      expect(((await response.json()) as { error: { code: string } }).error.code).toMatch(/UNAVAILABLE/);
      await waitFor(async () => (await broken.stagingProvider.list()).items.length === 0, { what: 'the staged body released' });
      expect((await broken.app.request('/ready')).status).toBe(503);
    } finally {
      await broken.close();
    }
  });

  it('Redis down: the event stream and the board answer 503 in the usual shape, not a silent stream or a 500', async () => {
    // Subscribed before Redis went away, as a web process that served event streams already is.
    const broken = await startTestService('api-redis-down-events', {}, { worker: false });
    const unsubscribe = await broken.deps.bus.subscribe('*', () => undefined);
    const ended = new Promise((resolve) => broken.deps.redis.once('end', resolve));
    broken.deps.redis.disconnect();
    await ended;
    try {
      for (const [path, headers] of [
        ['/v1/events', {}],
        ['/v1/events', { 'Last-Event-ID': '1-0' }],
        ['/admin/queues/api/queues?page=1&jobsPerPage=10', {}],
      ] as const) {
        const response = await broken.app.request(path, { headers });
        expect(response.status, path).toBe(503);
        expect(response.headers.get('retry-after'), path).not.toBeNull();
        expect(((await response.json()) as { error: { code: string } }).error.code, path).toMatch(/UNAVAILABLE/);
      }
    } finally {
      await unsubscribe();
      await broken.close();
    }
  });
});

/** A service whose Redis connection is cut after start, as when Redis goes away under a running API. */
async function startBrokenService(): Promise<TestService> {
  const broken = await startTestService('api-redis-down', { STAGING_INLINE_MAX: '1024' }, { worker: false });
  // Closed, not closing: a request sent while it closes may have its job sent, and keeps its body (uncertain).
  const ended = new Promise((resolve) => broken.deps.redis.once('end', resolve));
  broken.deps.redis.disconnect();
  await ended;
  return broken;
}

describe('error log lines', () => {
  it('a 501 (a condition this API does not take) is no error of the server: no "request failed" error line', async () => {
    const lines: string[] = [];
    const sink = new PassThrough();
    sink.on('data', (chunk: Buffer) => lines.push(...chunk.toString().split('\n').filter(Boolean)));
    const app = createApp({ ...service.deps, log: pino({ level: 'info' }, sink) });
    const refused = await app.request('/v1/stores/mem/objects/log/k', { method: 'PUT', body: 'x', headers: { 'If-None-Match': '"abc"' } });
    expect(refused.status).toBe(501);
    await new Promise((resolve) => setImmediate(resolve));
    expect(lines.filter((line) => line.includes('request failed'))).toEqual([]);
  });
});
