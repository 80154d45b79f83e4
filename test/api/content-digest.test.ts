/**
 * RFC 9530 digests (`src/api/content-digest.ts`): an upload naming its sha-256 is checked against what arrived,
 * on every route that takes a body; objects are served with their `Repr-Digest`.
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listen } from '../../src/api/server.js';
import { quietLog, startTestService, type TestService } from '../support/service.js';

const TOKEN = 'digest-test-token-0123456789abcdef';
const bearer = { Authorization: `Bearer ${TOKEN}` };
const sha256 = (content: string | Buffer) => createHash('sha256').update(content).digest('base64');
const digestOf = (content: string | Buffer) => `sha-256=:${sha256(content)}:`;

let service: TestService;
const request = (path: string, init?: RequestInit) => service.app.request(path, init);
const errorOf = async (response: Response) => ((await response.json()) as { error: { code: string; message: string } }).error;
const staged = async () => (await service.stagingProvider.list()).items.map((item) => item.key);
const put = (key: string, body: string | Buffer, headers: Record<string, string>) =>
  request(`/v1/stores/files/objects/${key}?wait=true`, { method: 'PUT', body, headers: { ...bearer, ...headers } });

beforeAll(async () => {
  service = await startTestService('api-digest', { API_TOKENS: TOKEN, STORES: 'files:disk', STAGING_INLINE_MAX: '1024' });
});
afterAll(async () => {
  await service?.close();
});

describe('uploads', () => {
  it('a body that matches its Content-Digest is written; the object is served with its Repr-Digest, a range too', async () => {
    const response = await put('digest/ok.txt', 'checked content', { 'Content-Digest': digestOf('checked content') });
    expect(response.status).toBe(200);
    const get = await request('/v1/stores/files/objects/digest/ok.txt', { headers: bearer });
    expect(get.headers.get('repr-digest')).toBe(digestOf('checked content'));
    const range = await request('/v1/stores/files/objects/digest/ok.txt', { headers: { ...bearer, Range: 'bytes=0-6' } });
    expect(range.status).toBe(206);
    expect(await range.text()).toBe('checked');
    expect(range.headers.get('repr-digest')).toBe(digestOf('checked content'));
    const head = await request('/v1/stores/files/objects/digest/ok.txt', { method: 'HEAD', headers: bearer });
    expect(head.headers.get('repr-digest')).toBe(digestOf('checked content'));
    const unchanged = await request('/v1/stores/files/objects/digest/ok.txt', { headers: { ...bearer, 'If-None-Match': get.headers.get('etag')! } });
    expect(unchanged.status).toBe(304);
    expect(unchanged.headers.get('repr-digest')).toBe(digestOf('checked content'));
  });

  it('a body that does not match is 400 BAD_DIGEST, naming the sha-256 that arrived; nothing is written or left staged', async () => {
    const small = await put('digest/bad.txt', 'what arrived', { 'Content-Digest': digestOf('what was sent') });
    expect(small.status).toBe(400);
    const error = await errorOf(small);
    expect(error.code).toBe('BAD_DIGEST');
    expect(error.message).toContain(`:${sha256('what arrived')}:`);
    // Over STAGING_INLINE_MAX: streamed to the staging store, then released.
    const large = Buffer.alloc(64 * 1024, 'x');
    const streamed = await put('digest/bad.bin', large, { 'Repr-Digest': digestOf(Buffer.alloc(64 * 1024, 'y')) });
    expect(streamed.status).toBe(400);
    expect((await errorOf(streamed)).code).toBe('BAD_DIGEST');
    expect(await staged()).toEqual([]);
    for (const key of ['digest/bad.txt', 'digest/bad.bin']) {
      expect((await request(`/v1/stores/files/objects/${key}`, { headers: bearer })).status).toBe(404);
    }
    const jobs = async () => {
      const counts = await service.deps.queues.queue('objects').getJobCounts('waiting', 'active', 'completed', 'failed', 'delayed');
      return Object.values(counts).reduce((sum, count) => sum + count, 0);
    };
    const before = await jobs();
    expect((await put('digest/bad-again.txt', 'x', { 'Content-Digest': digestOf('y') })).status).toBe(400);
    expect(await jobs()).toBe(before); // no job was enqueued
  });

  it('both headers are checked when both come; sha-256 among other algorithms is the one checked', async () => {
    const both = await put('digest/both.txt', 'abc', { 'Content-Digest': digestOf('abc'), 'Repr-Digest': digestOf('abd') });
    expect((await errorOf(both)).code).toBe('BAD_DIGEST');
    const sha512 = createHash('sha512').update('abc').digest('base64');
    const listed = await put('digest/listed.txt', 'abc', { 'Content-Digest': `sha-512=:${sha512}:, ${digestOf('abc')};note=1` });
    expect(listed.status).toBe(200);
  });

  it('a quoted parameter may hold a comma (RFC 8941 strings, escapes included)', async () => {
    const sha512 = createHash('sha512').update('abc').digest('base64');
    const header = `${digestOf('abc')};note="a,b", sha-512=:${sha512}:;note="x\\",y"`;
    expect((await put('digest/quoted.txt', 'abc', { 'Content-Digest': header })).status).toBe(200);
    // The comma inside quotes does not hide a wrong sha-256 either.
    const bad = await put('digest/quoted-bad.txt', 'abc', { 'Content-Digest': `${digestOf('abd')};note="a,b"` });
    expect((await errorOf(bad)).code).toBe('BAD_DIGEST');
  });

  it('an empty digest header is no digest (RFC 8941: an empty dictionary is an absent field)', async () => {
    for (const header of ['', '   ']) {
      const response = await put('digest/empty.txt', 'abc', { 'Content-Digest': header, 'Repr-Digest': header });
      expect(response.status, JSON.stringify(header)).toBe(200);
    }
  });

  it('refuses a digest it cannot check or read, before reading the body', async () => {
    const cases: [string, RegExp][] = [
      [`sha-512=:${createHash('sha512').update('abc').digest('base64')}:`, /only sha-256 is checked/],
      ['sha-256=abc', /not a list of <algorithm>=:<base64>:/],
      ['sha-256=:YWJj:', /32 bytes, base64-encoded; this one is 3/],
    ];
    for (const [header, message] of cases) {
      const response = await put('digest/refused.txt', 'abc', { 'Content-Digest': header });
      expect(response.status, header).toBe(400);
      const error = await errorOf(response);
      expect(error.code).toBe('BAD_REQUEST');
      expect(error.message).toMatch(message);
    }
  });

  it('versions and signed PUT URLs check it too', async () => {
    const version = await request('/v1/stores/files/objects/digest/versioned.txt/versions?wait=true', {
      method: 'POST',
      body: 'v1',
      headers: { ...bearer, 'Content-Digest': digestOf('v0') },
    });
    expect((await errorOf(version)).code).toBe('BAD_DIGEST');
    const url = service.deps.signer.sign({ method: 'PUT', store: 'files', key: 'digest/signed.txt', expires: Math.floor(Date.now() / 1000) + 60 });
    const signedBad = await request(`${url}&wait=true`, { method: 'PUT', body: 'up', headers: { 'Content-Digest': digestOf('down') } });
    expect((await errorOf(signedBad)).code).toBe('BAD_DIGEST');
    const signedGood = await request(`${url}&wait=true`, { method: 'PUT', body: 'up', headers: { 'Content-Digest': digestOf('up') } });
    expect(signedGood.status).toBe(200);
  });
});

describe('digests in trailers (over HTTP: Node reads them after the body)', () => {
  /** A raw chunked PUT with `trailers` after its last chunk; the answer's status line and body. */
  async function chunkedPut(key: string, body: string, headers: string, trailers: string): Promise<{ status: number; text: string }> {
    const server = await listen(service.app, { host: '127.0.0.1', port: 0, apiTokens: [] }, quietLog);
    try {
      const { port } = new URL(server.url);
      const answer = await new Promise<string>((resolve, reject) => {
        // Written, not ended: a client that half-closes has its request aborted. `Connection: close` ends the answer.
        const socket = net.connect(Number(port), '127.0.0.1', () => {
          socket.write(
            `PUT /v1/stores/files/objects/${key}?wait=true HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${TOKEN}\r\n` +
              `Transfer-Encoding: chunked\r\nConnection: close\r\n${headers}\r\n` +
              `${Buffer.byteLength(body).toString(16)}\r\n${body}\r\n0\r\n${trailers}\r\n`,
          );
        });
        let text = '';
        socket.on('data', (chunk: Buffer) => (text += chunk.toString()));
        socket.on('end', () => resolve(text));
        socket.on('error', reject);
      });
      return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1]), text: answer };
    } finally {
      await server.close(0);
    }
  }
  const read = (key: string) => request(`/v1/stores/files/objects/${key}`, { headers: bearer });

  it('a body that matches the digest in its trailers is written', async () => {
    const answer = await chunkedPut('trailed/ok.txt', 'sent in chunks', 'Trailer: Content-Digest\r\n', `Content-Digest: ${digestOf('sent in chunks')}\r\n`);
    expect(answer.status, answer.text).toBe(200);
    expect(await (await read('trailed/ok.txt')).text()).toBe('sent in chunks');
  });

  it('one that does not is 400 BAD_DIGEST, announced or not; nothing is written or left staged', async () => {
    for (const [key, announce, field] of [
      ['trailed/bad.txt', 'Trailer: Content-Digest\r\n', 'Content-Digest'],
      ['trailed/unannounced.txt', '', 'Repr-Digest'],
    ] as const) {
      const answer = await chunkedPut(key, 'what arrived', announce, `${field}: ${digestOf('what was sent')}\r\n`);
      expect(answer.status, answer.text).toBe(400);
      expect(answer.text).toContain('BAD_DIGEST');
      expect(answer.text).toContain(`:${sha256('what arrived')}:`);
      expect((await read(key)).status).toBe(404);
    }
    expect(await staged()).toEqual([]);
  });

  it('a digest announced in Trailer that never comes is 400, not a write unchecked', async () => {
    const answer = await chunkedPut('trailed/missing.txt', 'abc', 'Trailer: X-Other, repr-digest\r\n', '');
    expect(answer.status, answer.text).toBe(400);
    expect(answer.text).toMatch(/Repr-Digest is announced in Trailer but did not come/);
    expect((await read('trailed/missing.txt')).status).toBe(404);
    expect(await staged()).toEqual([]);
  });
});

describe('copies (X-Copy-Source): the digest is checked against the source, whose content is copied', () => {
  const copy = (key: string, headers: Record<string, string>) =>
    request(`/v1/stores/files/objects/${key}?wait=true`, { method: 'PUT', headers: { ...bearer, 'X-Copy-Source': 'files/copied/source.txt', ...headers } });

  it('a matching digest copies; another is 400 BAD_DIGEST with nothing written; a malformed one is 400 at once', async () => {
    expect((await put('copied/source.txt', 'the source', {})).status).toBe(200);
    const good = await copy('copied/good.txt', { 'Content-Digest': digestOf('the source') });
    expect(good.status, await good.clone().text()).toBe(200);
    expect(await (await request('/v1/stores/files/objects/copied/good.txt', { headers: bearer })).text()).toBe('the source');

    const bad = await copy('copied/bad.txt', { 'Repr-Digest': digestOf('something else') });
    expect(bad.status).toBe(400);
    const error = await errorOf(bad);
    expect(error.code).toBe('BAD_DIGEST');
    expect(error.message).toContain(`:${sha256('the source')}:`);
    expect((await request('/v1/stores/files/objects/copied/bad.txt', { headers: bearer })).status).toBe(404);

    const malformed = await copy('copied/malformed.txt', { 'Content-Digest': 'sha-256=:YWJj:' });
    expect((await errorOf(malformed)).code).toBe('BAD_REQUEST');
    const announced = await copy('copied/announced.txt', { Trailer: 'Content-Digest' });
    expect((await errorOf(announced)).message).toMatch(/announced in Trailer but did not come/);
  });

  it('under an Idempotency-Key, a repeat is checked against what the first copy pinned', async () => {
    expect((await put('copied/source.txt', 'pinned', {})).status).toBe(200);
    const key = { 'Idempotency-Key': `digest-copy-${Date.now()}` };
    expect((await copy('copied/idem.txt', key)).status).toBe(200);
    expect((await put('copied/source.txt', 'changed since', {})).status).toBe(200);
    expect((await copy('copied/idem.txt', { ...key, 'Content-Digest': digestOf('pinned') })).status).toBe(200);
    expect((await errorOf(await copy('copied/idem.txt', { ...key, 'Content-Digest': digestOf('changed since') }))).code).toBe('BAD_DIGEST');
  });
});
