/**
 * RFC 9530 digests (`src/api/content-digest.ts`): an upload naming its sha-256 is checked against what arrived,
 * on every route that takes a body; objects are served with their `Repr-Digest`.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestService, type TestService } from '../support/service.js';

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
