/**
 * PUT with `X-Copy-Source`: a server-side copy of an object (any store, any version) through the `copy` job.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listen } from '../../src/api/server.js';
import { quietLog } from '../jobs/fixtures/pipeline.js';
import { startTestService, type TestService } from '../support/service.js';

let service: TestService;
const request = (path: string, init?: RequestInit) => service.app.request(path, init);
const object = (store: string, key: string) => `/v1/stores/${store}/objects/${key}`;
type Info = { key: string; etag: string; size: number; contentType: string; metadata: Record<string, string>; versionId?: string };

async function expectOk(response: Response): Promise<Info> {
  expect(response.status, await response.clone().text()).toBe(200);
  return (await response.json()) as Info;
}
const put = async (store: string, key: string, body: string, headers: Record<string, string> = {}) =>
  expectOk(await request(`${object(store, key)}?wait=true`, { method: 'PUT', body, headers }));
const copy = (store: string, key: string, headers: Record<string, string>) => request(`${object(store, key)}?wait=true`, { method: 'PUT', headers });
async function expectError(response: Response, status: number, message: RegExp): Promise<void> {
  expect(response.status).toBe(status);
  expect(((await response.json()) as { error: { message: string } }).error.message).toMatch(message);
}

beforeAll(async () => {
  service = await startTestService('api-copy');
});
afterAll(async () => {
  await service?.close();
});

describe('PUT with X-Copy-Source', () => {
  it('copies an object, its Content-Type and metadata, within a store and to another', async () => {
    const source = await put('files', 'reports/q1 é.csv', 'a,b\n1,2\n', { 'Content-Type': 'text/csv', 'X-Meta-Owner': 'ada' });
    const encoded = `files/reports/${encodeURIComponent('q1 é.csv')}`;
    for (const [store, key] of [['files', 'archive/q1.csv'], ['mem', 'cache/q1.csv']] as const) {
      const copied = await expectOk(await copy(store, key, { 'X-Copy-Source': encoded }));
      expect(copied).toMatchObject({ key, etag: source.etag, size: source.size, contentType: 'text/csv', metadata: { owner: 'ada' } });
      const read = await request(object(store, key));
      expect(await read.text()).toBe('a,b\n1,2\n');
      expect(read.headers.get('content-type')).toBe('text/csv');
    }
    // The source is left as it was.
    expect(await (await request(object('files', encoded.slice('files/'.length)))).text()).toBe('a,b\n1,2\n');
  });

  it("a Content-Type or X-Meta-* of the request replaces the source's", async () => {
    await put('mem', 'meta/source', 'x', { 'Content-Type': 'text/plain', 'X-Meta-Owner': 'ada', 'X-Meta-Team': 'a' });
    const typed = await expectOk(await copy('mem', 'meta/typed', { 'X-Copy-Source': '/mem/meta/source', 'Content-Type': 'text/markdown' }));
    expect(typed).toMatchObject({ contentType: 'text/markdown', metadata: { owner: 'ada', team: 'a' } });
    const described = await expectOk(await copy('mem', 'meta/described', { 'X-Copy-Source': 'mem/meta/source', 'X-Meta-Owner': 'bob' }));
    expect(described).toMatchObject({ contentType: 'text/plain', metadata: { owner: 'bob' } });
  });

  it('copies an older version with X-Copy-Source-Version', async () => {
    const old = await expectOk(await request(`${object('files', 'versioned/doc')}/versions?wait=true`, { method: 'POST', body: 'first', headers: { 'X-Version-Message': 'first' } }));
    await put('files', 'versioned/doc', 'second');
    const copied = await expectOk(await copy('mem', 'versioned/first', { 'X-Copy-Source': 'files/versioned/doc', 'X-Copy-Source-Version': old.versionId! }));
    expect(copied.etag).toBe(old.etag);
    expect(await (await request(object('mem', 'versioned/first'))).text()).toBe('first');
  });

  it('takes the conditions of a write on the target: If-None-Match: * and If-Match', async () => {
    await put('mem', 'cond/source', 'source');
    const existing = await put('mem', 'cond/target', 'already here');
    await expectError(await copy('mem', 'cond/target', { 'X-Copy-Source': 'mem/cond/source', 'If-None-Match': '*' }), 412, /./);
    await expectError(await copy('mem', 'cond/target', { 'X-Copy-Source': 'mem/cond/source', 'If-Match': '"0000"' }), 412, /./);
    const copied = await expectOk(await copy('mem', 'cond/target', { 'X-Copy-Source': 'mem/cond/source', 'If-Match': `"${existing.etag}"` }));
    expect(await (await request(object('mem', 'cond/target'))).text()).toBe('source');
    expect(copied.etag).not.toBe(existing.etag);
  });

  it('refuses what cannot be copied before any job: a missing source or store, a body, a malformed source', async () => {
    await put('mem', 'bad/source', 'x');
    await expectError(await copy('mem', 'bad/t', { 'X-Copy-Source': 'mem/bad/missing' }), 404, /bad\/missing/);
    await expectError(await copy('mem', 'bad/t', { 'X-Copy-Source': 'nowhere/bad/source' }), 404, /no store named "nowhere"/);
    await expectError(await copy('mem', 'bad/t', { 'X-Copy-Source': 'mem' }), 400, /<store>\/<key>/);
    await expectError(await copy('mem', 'bad/t', { 'X-Copy-Source': 'mem/a/%2e%2e/b' }), 400, /./);
    await expectError(await copy('mem', 'bad/t', { 'X-Copy-Source': 'mem/bad/source', 'X-Copy-Source-Version': 'v-none' }), 404, /./);
    await expectError(await copy('mem', 'bad/t', { 'X-Copy-Source-Version': 'v1' }), 400, /X-Copy-Source/);
    for (const framing of [{ 'Content-Length': '11' }, { 'Transfer-Encoding': 'chunked' }] as Record<string, string>[]) {
      const withBody = await request(object('mem', 'bad/t'), { method: 'PUT', body: 'content too', headers: { 'X-Copy-Source': 'mem/bad/source', ...framing } });
      await expectError(withBody, 400, /takes no body/);
    }
    expect((await service.deps.stores.get('mem')!.list({ prefix: 'bad/t' })).items).toEqual([]);
  });

  it('Idempotency-Key: a repeat is the first copy, even after the source changed or went; another target is a copy of its own', async () => {
    await put('mem', 'idem/source', 'first content');
    const headers = { 'X-Copy-Source': 'mem/idem/source', 'Idempotency-Key': `copy-${Date.now()}` };
    const ask = async () => ((await (await request(object('mem', 'idem/target'), { method: 'PUT', headers })).json()) as { jobId: string }).jobId;
    const first = await ask();
    const done = await expectOk(await copy('mem', 'idem/target', headers)); // the same job, waited for
    await put('mem', 'idem/source', 'changed since');
    expect(await ask()).toBe(first);
    expect(await expectOk(await copy('mem', 'idem/target', headers))).toEqual(done);
    await service.deps.stores.get('mem')!.delete('idem/source');
    expect(await ask()).toBe(first);
    expect(await (await request(object('mem', 'idem/target'))).text()).toBe('first content');
    await expectError(await copy('mem', 'idem/elsewhere', headers), 404, /idem\/source/);
  });

  it('X-Copy-Source sent twice is 400 over HTTP, not two sources read as one key', async () => {
    await put('mem', 'twice/a', 'a');
    const server = await listen(service.app, { host: '127.0.0.1', port: 0, apiTokens: [] }, quietLog);
    try {
      const { port } = new URL(server.url);
      const answer = await new Promise<string>((resolve, reject) => {
        const socket = net.connect(Number(port), '127.0.0.1', () => {
          socket.end(
            'PUT /v1/stores/mem/objects/twice/target HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n' +
              'X-Copy-Source: mem/twice/a\r\nX-Copy-Source: mem/twice/b\r\n\r\n',
          );
        });
        let text = '';
        socket.on('data', (chunk: Buffer) => (text += chunk.toString()));
        socket.on('end', () => resolve(text));
        socket.on('error', reject);
      });
      expect(answer).toMatch(/^HTTP\/1\.1 400/);
      expect(answer).toContain('X-Copy-Source is sent once');
    } finally {
      await server.close(0);
    }
  });

  it('a signed PUT URL does not copy: it grants writing what it is sent, not reading another object', async () => {
    await put('mem', 'secret/source', 'not for the URL holder');
    const { url } = (await (await request(`${object('mem', 'signed/target')}/url?method=PUT`)).json()) as { url: string };
    const signed = new URL(url);
    const response = await request(`${signed.pathname}${signed.search}`, { method: 'PUT', headers: { 'X-Copy-Source': 'mem/secret/source', 'Content-Length': '0' } });
    await expectError(response, 400, /signed PUT URL writes the body/);
    await expect(service.deps.stores.get('mem')!.stat('signed/target')).rejects.toThrow();
  });
});
