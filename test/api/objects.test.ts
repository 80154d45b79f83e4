import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Hono } from 'hono';
import { createApp } from '../../src/api/app.js';
import { respondWithError, toApiError } from '../../src/api/errors.js';
import { objectGet } from '../../src/api/routes/objects.js';
import { ProviderUnavailableError } from '../../src/providers/errors.js';
import { RamProvider } from '../../src/providers/ram.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { interceptMethod } from '../support/intercept.js';
import { startTestService, type TestService } from '../support/service.js';

const sha256 = (content: Uint8Array | string) => createHash('sha256').update(content).digest('hex');
const PROXIED_TOKEN = 'proxied-api-token-0123';

let service: TestService;
const request = (path: string, init?: RequestInit) => service.app.request(path, init);
const object = (store: string, key: string) => `/v1/stores/${store}/objects/${key}`;

async function put(store: string, key: string, body: string | Uint8Array, headers: Record<string, string> = {}) {
  const response = await request(`${object(store, key)}?wait=true`, { method: 'PUT', body, headers });
  expect(response.status, await response.clone().text()).toBe(200);
  return (await response.json()) as { key: string; etag: string; size: number; versionId?: string };
}

beforeAll(async () => {
  service = await startTestService('api-objects', { STAGING_INLINE_MAX: '1024' });
});
afterAll(async () => {
  await service?.close();
});

describe('writes are jobs', () => {
  it('PUT answers 202 with a job whose status ends completed with the ObjectInfo', async () => {
    const response = await request(object('files', 'async/one.txt'), { method: 'PUT', body: 'queued', headers: { 'Content-Type': 'text/plain' } });
    expect(response.status).toBe(202);
    const { jobId, statusUrl } = (await response.json()) as { jobId: string; statusUrl: string };
    expect(statusUrl).toBe(`/v1/jobs/${jobId}`);
    let status: { state: string; result?: { etag: string }; attemptsMade: number } | undefined;
    for (let i = 0; i < 200 && status?.state !== 'completed'; i++) {
      status = (await (await request(statusUrl)).json()) as typeof status;
      if (status?.state !== 'completed') await new Promise((resolve) => setTimeout(resolve, 25));
    }
    expect(status).toMatchObject({ state: 'completed', result: { etag: sha256('queued') } });
  });

  it('PUT ?wait=true answers 200 with the ObjectInfo, and GET serves content with its headers', async () => {
    const info = await put('files', 'docs/readme.md', '# Hello', { 'Content-Type': 'text/markdown', 'X-Meta-Owner': 'ada' });
    expect(info).toMatchObject({ key: 'docs/readme.md', size: 7, etag: sha256('# Hello') });
    const response = await request(object('files', 'docs/readme.md'));
    expect(response.status).toBe(200);
    expect(await response.text()).toBe('# Hello');
    expect(response.headers.get('etag')).toBe(`"${sha256('# Hello')}"`);
    expect(response.headers.get('content-type')).toBe('text/markdown');
    expect(response.headers.get('content-length')).toBe('7');
    expect(response.headers.get('x-meta-owner')).toBe('ada');
    expect(Date.parse(response.headers.get('last-modified')!)).not.toBeNaN();
  });

  it('a body larger than STAGING_INLINE_MAX is staged and written whole', async () => {
    const body = randomBytes(200 * 1024);
    const info = await put('files', 'big/blob.bin', body);
    expect(info).toMatchObject({ size: body.length, etag: sha256(body) });
    const read = Buffer.from(await (await request(object('files', 'big/blob.bin'))).arrayBuffer());
    expect(read.equals(body)).toBe(true);
    expect((await service.stagingProvider.list()).items).toEqual([]); // released after the job
  });

  it('metadata values outside ASCII travel in the utf-8 extended form both ways', async () => {
    await put('mem', 'meta/unicode', 'x', { 'X-Meta-City': `utf-8''${encodeURIComponent('Zürich 東京')}` });
    const stat = await service.deps.stores.get('mem')!.stat('meta/unicode');
    expect(stat.metadata.city).toBe('Zürich 東京');
    const response = await request(object('mem', 'meta/unicode'), { method: 'HEAD' });
    expect(response.headers.get('x-meta-city')).toBe(`utf-8''${encodeURIComponent('Zürich 東京')}`);
  });

  it('Idempotency-Key makes a repeated request the same job', async () => {
    const headers = { 'Idempotency-Key': `idem-${Date.now()}` };
    const first = (await (await request(object('mem', 'idem/k'), { method: 'PUT', body: 'one', headers })).json()) as { jobId: string };
    const second = (await (await request(object('mem', 'idem/k'), { method: 'PUT', body: 'one', headers })).json()) as { jobId: string };
    expect(second.jobId).toBe(first.jobId);
  });

  it('an Idempotency-Key reused for another object or other content makes a job of its own, and loses neither', async () => {
    const headers = { 'Idempotency-Key': `reused-${Date.now()}` };
    const answers = [];
    for (const [key, body] of [['idem/a', 'one'], ['idem/b', 'two'], ['idem/a', 'three']]) {
      const response = await request(`${object('mem', key!)}?wait=true`, { method: 'PUT', body, headers });
      expect(response.status).toBe(200);
      answers.push((await response.json()) as { key: string; etag: string });
    }
    expect(answers.map((answer) => answer.key)).toEqual(['idem/a', 'idem/b', 'idem/a']);
    expect((await service.deps.stores.get('mem')!.stat('idem/b')).etag).toBe(answers[1]!.etag);
    expect((await service.deps.stores.get('mem')!.stat('idem/a')).etag).toBe(answers[2]!.etag);
  });

  it('If-Match writes only over the expected etag (412 otherwise)', async () => {
    const first = await put('mem', 'cas/doc', 'one');
    await put('mem', 'cas/doc', 'two', { 'If-Match': `"${first.etag}"` });
    const stale = await request(`${object('mem', 'cas/doc')}?wait=true`, { method: 'PUT', body: 'three', headers: { 'If-Match': `"${first.etag}"` } });
    expect(stale.status).toBe(412);
    expect(((await stale.json()) as { error: { code: string } }).error.code).toBe('PRECONDITION_FAILED');
    expect(await (await request(object('mem', 'cas/doc'))).text()).toBe('two');
  });

  it('If-Match takes an etag without its quotes too, as copied from a JSON answer', async () => {
    const first = await put('mem', 'cas/bare', 'one');
    const guarded = await request(`${object('mem', 'cas/bare')}?wait=true`, { method: 'PUT', body: 'two', headers: { 'If-Match': first.etag } });
    expect(guarded.status).toBe(200);
  });

  it('If-Match: * needs an existing object; a list matches any of its etags; a weak tag never matches', async () => {
    const guarded = (key: string, body: string, ifMatch: string) =>
      request(`${object('mem', key)}?wait=true`, { method: 'PUT', body, headers: { 'If-Match': ifMatch } });
    expect((await guarded('cas/any', 'first', '*')).status).toBe(412);
    const first = await put('mem', 'cas/any', 'one');
    expect((await guarded('cas/any', 'two', '*')).status).toBe(200);
    const second = await service.deps.stores.get('mem')!.stat('cas/any');
    expect((await guarded('cas/any', 'three', `"${first.etag}", "${'0'.repeat(64)}"`)).status).toBe(412);
    expect((await guarded('cas/any', 'three', `"${first.etag}", "${second.etag}"`)).status).toBe(200);
    expect((await guarded('cas/any', 'four', `W/"${sha256('three')}"`)).status).toBe(412);
    expect((await guarded('cas/any', 'four', '"*"')).status).toBe(412); // quoted, an etag like any other: not `*`
    expect((await guarded('cas/any', 'four', '"a,b"')).status).toBe(412); // a comma inside quotes is the etag's
    expect(await (await request(object('mem', 'cas/any'))).text()).toBe('three');
    const versioned = await request(`${object('mem', 'cas/any')}/versions?wait=true`, { method: 'POST', body: 'v', headers: { 'If-Match': `"${second.etag}"` } });
    expect(versioned.status).toBe(412);
  });

  it('DELETE removes the object (404 after)', async () => {
    await put('files', 'gone/soon', 'bye');
    const response = await request(`${object('files', 'gone/soon')}?wait=true`, { method: 'DELETE' });
    expect(response.status).toBe(200);
    expect((await request(object('files', 'gone/soon'))).status).toBe(404);
  });
});

describe('reads', () => {
  it('HEAD has the headers and no body', async () => {
    await put('files', 'head/me', 'twelve bytes');
    const response = await request(object('files', 'head/me'), { method: 'HEAD' });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-length')).toBe('12');
    expect(await response.text()).toBe('');
  });

  it('If-None-Match with the current etag answers 304', async () => {
    const info = await put('files', 'cache/me', 'cached');
    const response = await request(object('files', 'cache/me'), { headers: { 'If-None-Match': `"${info.etag}"` } });
    expect(response.status).toBe(304);
    expect((await request(object('files', 'cache/me'), { headers: { 'If-None-Match': '"other"' } })).status).toBe(200);
  });

  it('Range answers 206 with Content-Range; suffix ranges work; outside the object is 416', async () => {
    await put('files', 'range/digits', '0123456789');
    const middle = await request(object('files', 'range/digits'), { headers: { Range: 'bytes=2-5' } });
    expect(middle.status).toBe(206);
    expect(middle.headers.get('content-range')).toBe('bytes 2-5/10');
    expect(await middle.text()).toBe('2345');
    const suffix = await request(object('files', 'range/digits'), { headers: { Range: 'bytes=-3' } });
    expect(await suffix.text()).toBe('789');
    const outside = await request(object('files', 'range/digits'), { headers: { Range: 'bytes=20-30' } });
    expect(outside.status).toBe(416);
    expect(outside.headers.get('content-range')).toBe('bytes */10');
  });

  it('a suffix range of an empty object is satisfiable (RFC 9110 §14.1.1): 200 with the empty object, not 416', async () => {
    await put('files', 'range/empty', '');
    for (const range of ['bytes=-1024', 'bytes=-1, 5-9']) {
      const response = await request(object('files', 'range/empty'), { headers: { Range: range } });
      expect(response.status, range).toBe(200);
      expect(response.headers.get('content-length')).toBe('0');
      expect(await response.text()).toBe('');
    }
    expect((await request(object('files', 'range/empty'), { headers: { Range: 'bytes=0-9' } })).status).toBe(416);
  });

  it('If-Range: the range of the same object, or the whole object once it changed (a resumed download never mixes two)', async () => {
    const first = await put('files', 'range/resumed', 'AAAAAAAAAA');
    const resume = (validator: string) => request(object('files', 'range/resumed'), { headers: { Range: 'bytes=5-', 'If-Range': validator } });
    const same = await resume(`"${first.etag}"`);
    expect(same.status).toBe(206);
    expect(await same.text()).toBe('AAAAA');
    await put('files', 'range/resumed', 'BBBBBBBBBB');
    for (const validator of [`"${first.etag}"`, `W/"${sha256('BBBBBBBBBB')}"`, new Date().toUTCString()]) {
      const changed = await resume(validator);
      expect(changed.status).toBe(200);
      expect(await changed.text()).toBe('BBBBBBBBBB');
    }
  });

  it('a range of an object replaced between its stat and its read is not cut from the new one: that is sent whole', async () => {
    const ram = new RamProvider({ maxBytes: 1024 * 1024 });
    await ram.write('doc', 'AAAAAAAAAA');
    const stale = await ram.stat('doc');
    await ram.write('doc', 'BBBBBBBBBBBBBBBBBBBB');
    const racing = interceptMethod(ram, 'stat', () => async () => stale); // the stat saw the object before it changed
    const app = new Hono();
    app.get('/doc', (c) => objectGet(c, racing, 'doc'));
    for (const headers of [{ Range: 'bytes=5-' }, { Range: 'bytes=5-', 'If-Range': `"${stale.etag}"` }] as Record<string, string>[]) {
      const response = await app.request('/doc', { headers });
      expect(response.status).toBe(200);
      expect(response.headers.get('etag')).toBe(`"${sha256('BBBBBBBBBBBBBBBBBBBB')}"`);
      expect(await response.text()).toBe('BBBBBBBBBBBBBBBBBBBB');
    }
  });

  it('an object replaced between its stat and its read is judged again: If-Match of the old etag is 412, If-None-Match of the new 304', async () => {
    const ram = new RamProvider({ maxBytes: 1024 * 1024 });
    await ram.write('doc', 'old content');
    const stale = await ram.stat('doc');
    const current = await ram.write('doc', 'new content');
    const racing = interceptMethod(ram, 'stat', () => async () => stale); // the stat saw the object before it changed
    const app = new Hono();
    app.onError((error, c) => respondWithError(c, toApiError(error)));
    app.get('/doc', (c) => objectGet(c, racing, 'doc'));
    expect((await app.request('/doc', { headers: { 'If-Match': `"${stale.etag}"` } })).status).toBe(412);
    const unchanged = await app.request('/doc', { headers: { 'If-None-Match': `"${current.etag}"` } });
    expect(unchanged.status).toBe(304);
    expect(unchanged.headers.get('etag')).toBe(`"${current.etag}"`);
    const plain = await app.request('/doc');
    expect(plain.status).toBe(200);
    expect(plain.headers.get('etag')).toBe(`"${current.etag}"`);
    expect(await plain.text()).toBe('new content');
  });

  it('If-Match on a read compares strongly ("*", lists): a false one is 412 for GET and HEAD', async () => {
    const info = await put('files', 'cond/match', 'matched');
    const status = async (ifMatch: string, method = 'GET') => (await request(object('files', 'cond/match'), { method, headers: { 'If-Match': ifMatch } })).status;
    for (const ifMatch of [`"${info.etag}"`, '*', `"other", "${info.etag}"`]) expect(await status(ifMatch), ifMatch).toBe(200);
    for (const ifMatch of ['"other"', `W/"${info.etag}"`]) expect(await status(ifMatch), ifMatch).toBe(412);
    expect(await status('"other"', 'HEAD')).toBe(412);
  });

  it('If-Unmodified-Since is 412 once the object changed after it; ignored under If-Match or when not a date', async () => {
    await put('files', 'cond/unmodified', 'x');
    const status = async (headers: Record<string, string>) => (await request(object('files', 'cond/unmodified'), { headers })).status;
    const past = 'Mon, 01 Jan 1990 00:00:00 GMT';
    expect(await status({ 'If-Unmodified-Since': past })).toBe(412);
    expect(await status({ 'If-Unmodified-Since': new Date(Date.now() + 60_000).toUTCString() })).toBe(200);
    expect(await status({ 'If-Unmodified-Since': 'not a date' })).toBe(200);
    for (const notADate of ['1', 'rev 2001']) expect(await status({ 'If-Unmodified-Since': notADate }), notADate).toBe(200);
    expect(await status({ 'If-Unmodified-Since': past, 'If-Match': '*' })).toBe(200);
  });

  it('If-Modified-Since answers 304 with the validators while unchanged (to the second); ignored under If-None-Match or when not a date', async () => {
    const info = await put('files', 'cond/modified', 'x');
    const lastModified = (await request(object('files', 'cond/modified'), { method: 'HEAD' })).headers.get('last-modified')!;
    const read = (headers: Record<string, string>, method = 'GET') => request(object('files', 'cond/modified'), { method, headers });
    const unchanged = await read({ 'If-Modified-Since': lastModified });
    expect(unchanged.status).toBe(304);
    expect(unchanged.headers.get('etag')).toBe(`"${info.etag}"`);
    expect(unchanged.headers.get('last-modified')).toBe(lastModified);
    expect((await read({ 'If-Modified-Since': lastModified }, 'HEAD')).status).toBe(304);
    expect((await read({ 'If-Modified-Since': 'Mon, 01 Jan 1990 00:00:00 GMT' })).status).toBe(200);
    expect((await read({ 'If-Modified-Since': 'yesterday-ish' })).status).toBe(200);
    // What Date.parse takes but is no HTTP-date: ignored.
    expect((await read({ 'If-Modified-Since': '2099' })).status).toBe(200);
    // The obsolete forms of the same instant are honoured (asctime is GMT, whatever the server's time zone).
    const at = new Date(lastModified);
    const asctime = `${lastModified.slice(0, 3)} ${lastModified.slice(8, 11)} ${String(at.getUTCDate()).padStart(2)} ${lastModified.slice(17, 25)} ${at.getUTCFullYear()}`;
    expect((await read({ 'If-Modified-Since': asctime })).status, asctime).toBe(304);
    expect((await read({ 'If-Modified-Since': lastModified, 'If-None-Match': '"other"' })).status).toBe(200);
  });

  it('If-Match is judged before If-None-Match: a false one is 412 even when If-None-Match would be 304', async () => {
    const info = await put('files', 'cond/order', 'x');
    const response = await request(object('files', 'cond/order'), { headers: { 'If-Match': '"other"', 'If-None-Match': `"${info.etag}"` } });
    expect(response.status).toBe(412);
  });

  it('HEAD ignores Range, even a malformed or unsatisfiable one', async () => {
    await put('files', 'range/head', '0123456789');
    for (const range of ['bytes=5-2', 'bytes=20-30', 'bytes=2-5']) {
      const response = await request(object('files', 'range/head'), { method: 'HEAD', headers: { Range: range } });
      expect(response.status, range).toBe(200);
      expect(response.headers.get('content-length'), range).toBe('10');
    }
  });

  it('the range unit is case-insensitive, and a unit other than bytes is ignored (the whole object)', async () => {
    await put('files', 'range/units', '0123456789');
    const mixedCase = await request(object('files', 'range/units'), { headers: { Range: 'Bytes=0-1' } });
    expect(mixedCase.status).toBe(206);
    expect(await mixedCase.text()).toBe('01');
    const items = await request(object('files', 'range/units'), { headers: { Range: 'items=0-1' } });
    expect(items.status).toBe(200);
    expect(await items.text()).toBe('0123456789');
  });

  it('several ranges get the whole object when one is satisfiable, and 416 when none is', async () => {
    await put('files', 'range/several', '0123456789');
    for (const range of ['bytes=0-1,5-6', 'bytes=0-1, 20-30']) {
      const whole = await request(object('files', 'range/several'), { headers: { Range: range } });
      expect(whole.status, range).toBe(200);
      expect(await whole.text()).toBe('0123456789');
    }
    const none = await request(object('files', 'range/several'), { headers: { Range: 'bytes=20-30,40-' } });
    expect(none.status).toBe(416);
    expect(none.headers.get('content-range')).toBe('bytes */10');
  });

  it('object reads tell caches to revalidate every use, privately (200, 206, 304, HEAD, signed GET)', async () => {
    const info = await put('files', 'cache/control', '0123456789');
    const { url } = (await (await request(`${object('files', 'cache/control')}/url`)).json()) as { url: string };
    const responses = [
      await request(object('files', 'cache/control')),
      await request(object('files', 'cache/control'), { headers: { Range: 'bytes=0-1' } }),
      await request(object('files', 'cache/control'), { headers: { 'If-None-Match': `"${info.etag}"` } }),
      await request(object('files', 'cache/control'), { method: 'HEAD' }),
      await request(new URL(url).pathname + new URL(url).search),
    ];
    expect(responses.map((response) => response.status)).toEqual([200, 206, 304, 200, 200]);
    for (const response of responses) expect(response.headers.get('cache-control')).toBe('private, no-cache');
  });

  it('lists with prefix and cursor', async () => {
    for (const name of ['a', 'b', 'c']) await put('mem', `list/${name}`, name);
    const first = (await (await request('/v1/stores/mem/objects?prefix=list/&limit=2')).json()) as { items: { key: string }[]; cursor?: string };
    expect(first.items.map((item) => item.key)).toEqual(['list/a', 'list/b']);
    const second = (await (await request(`/v1/stores/mem/objects?prefix=list/&limit=2&cursor=${first.cursor}`)).json()) as { items: { key: string }[]; cursor?: string };
    expect(second.items.map((item) => item.key)).toEqual(['list/c']);
    expect(second.cursor).toBeUndefined();
  });

  it('lists one level with ?delimiter=/: objects and common prefixes, paged by their sum', async () => {
    for (const key of ['tree/a', 'tree/sub/x', 'tree/sub/y', 'tree/z', 'tree/zz/deep/q']) await put('files', key, key);
    type Page = { items: { key: string }[]; prefixes?: string[]; cursor?: string };
    const whole = (await (await request('/v1/stores/files/objects?prefix=tree/&delimiter=/')).json()) as Page;
    expect(whole).toMatchObject({ items: [{ key: 'tree/a' }, { key: 'tree/z' }], prefixes: ['tree/sub/', 'tree/zz/'] });
    expect(whole.cursor).toBeUndefined();
    const first = (await (await request('/v1/stores/files/objects?prefix=tree/&delimiter=/&limit=2')).json()) as Page;
    expect([...first.items.map((item) => item.key), ...first.prefixes!]).toEqual(['tree/a', 'tree/sub/']);
    const second = (await (await request(`/v1/stores/files/objects?prefix=tree/&delimiter=/&limit=2&cursor=${first.cursor}`)).json()) as Page;
    expect([...second.items.map((item) => item.key), ...second.prefixes!]).toEqual(['tree/z', 'tree/zz/']);
    expect(second.cursor).toBeUndefined();
    // Without a delimiter the answer keeps its shape: every key, no prefixes.
    const flat = (await (await request('/v1/stores/files/objects?prefix=tree/')).json()) as Page;
    expect(flat.items).toHaveLength(5);
    expect(flat.prefixes).toBeUndefined();
    for (const bad of ['delimiter=', `delimiter=${'/'.repeat(65)}`]) {
      const response = await request(`/v1/stores/files/objects?prefix=tree/&${bad}`);
      expect(response.status).toBe(400);
      expect(((await response.json()) as { error: { code: string; message: string } }).error.message).toMatch(/delimiter/);
    }
  });

  it('a new key holding U+FFFE or U+FFFF is refused (S3 cannot delete it); one stored before is read and deleted', async () => {
    for (const [name, character] of [['fffe', '\ufffe'], ['ffff', '\uffff']] as const) {
      const path = object('files', `nonchar/${name}${encodeURIComponent(character)}`);
      for (const init of [{ method: 'PUT', body: 'x' }, { method: 'POST', body: 'x' }]) {
        const target = init.method === 'POST' ? `${path}/versions` : path;
        const response = await request(target, init);
        expect(response.status, `${init.method} ${name}`).toBe(400);
        expect(((await response.json()) as { error: { code: string } }).error.code).toBe('INVALID_KEY');
      }
      // Written before keys were refused them: still served, and deleted.
      await service.deps.stores.get('files')!.write(`nonchar/${name}${character}`, 'stored before');
      expect(await (await request(path)).text()).toBe('stored before');
      expect((await request(`${path}?wait=true`, { method: 'DELETE' })).status).toBe(200);
      expect((await request(path)).status).toBe(404);
    }
  });

  it('a key ending in a sub-resource name is addressed with its last slash encoded', async () => {
    await put('mem', 'notes%2Fversions', 'a key, not a listing');
    expect(await service.deps.stores.get('mem')!.stat('notes/versions')).toMatchObject({ size: 20 });
    expect(await (await request(object('mem', 'notes%2Fversions'))).text()).toBe('a key, not a listing');
  });

  it('lists stores and their stats', async () => {
    const stores = (await (await request('/v1/stores')).json()) as { items: { name: string; kind: string }[] };
    expect(stores.items.map((store) => `${store.name}:${store.kind}`)).toEqual(['files:disk', 'mem:ram']);
    await put('mem', 'stats/one', '1234');
    const stats = (await (await request('/v1/stores/mem/stats')).json()) as { objects: number; ops: Record<string, { count: number }> };
    expect(stats.objects).toBeGreaterThan(0);
    expect(stats.ops.write?.count).toBeGreaterThan(0);
  });
});

describe('write headers', () => {
  it('PUT If-None-Match: * creates only: 412 over an existing object, which stays; created again after a delete', async () => {
    const createOnly = (body: string) => request(`${object('files', 'create/only')}?wait=true`, { method: 'PUT', body, headers: { 'If-None-Match': '*' } });
    expect((await createOnly('first')).status).toBe(200);
    const refused = await createOnly('second');
    expect(refused.status).toBe(412);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('PRECONDITION_FAILED');
    expect(await (await request(object('files', 'create/only'))).text()).toBe('first');
    expect((await request(`${object('files', 'create/only')}?wait=true`, { method: 'DELETE' })).status).toBe(200);
    expect((await createOnly('third')).status).toBe(200);
    expect(await (await request(object('files', 'create/only'))).text()).toBe('third');
    // A new version of a key that exists, create-only, is refused the same way.
    const version = await request(`${object('files', 'create/only')}/versions?wait=true`, { method: 'POST', body: 'v', headers: { 'If-None-Match': ' * ' } });
    expect(version.status).toBe(412);
  });

  it('concurrent create-only PUTs of one new key: exactly one is written', async () => {
    const answers = await Promise.all(
      Array.from({ length: 6 }, (_, i) => request(`${object('files', 'create/race')}?wait=true`, { method: 'PUT', body: `writer ${i}`, headers: { 'If-None-Match': '*' } })),
    );
    const statuses = answers.map((answer) => answer.status).sort();
    expect(statuses).toEqual([200, 412, 412, 412, 412, 412]);
    const winner = answers.findIndex((answer) => answer.status === 200);
    expect(await (await request(object('files', 'create/race'))).text()).toBe(`writer ${winner}`);
  });

  it('a condition a mutation cannot honour is refused (501), never ignored', async () => {
    await put('files', 'guarded/keep', 'original');
    const refused: [string, RequestInit][] = [
      [`${object('files', 'guarded/keep')}?wait=true`, { method: 'PUT', body: 'clobbered', headers: { 'If-None-Match': '"an-etag"' } }],
      [`${object('files', 'guarded/keep')}?wait=true`, { method: 'PUT', body: 'clobbered', headers: { 'If-Unmodified-Since': new Date().toUTCString() } }],
      [`${object('files', 'guarded/keep')}?wait=true`, { method: 'DELETE', headers: { 'If-Match': '"nope"' } }],
      [`${object('files', 'guarded/keep')}?wait=true`, { method: 'DELETE', headers: { 'If-None-Match': '*' } }],
      [`${object('files', 'guarded/keep')}/versions/001m0000000000000000000000/restore?wait=true`, { method: 'POST', headers: { 'If-Match': '"nope"' } }],
    ];
    for (const [path, init] of refused) {
      const response = await request(path, init);
      expect(response.status, `${init.method} ${JSON.stringify(init.headers)}`).toBe(501);
      expect(((await response.json()) as { error: { code: string } }).error.code).toBe('NOT_SUPPORTED');
    }
    expect(await (await request(object('files', 'guarded/keep'))).text()).toBe('original');
  });

  it('a malformed If-Match or Idempotency-Key is 400 before the body is staged, leaving no staged file', async () => {
    const big = 'b'.repeat(4096); // over STAGING_INLINE_MAX: it would be staged
    const cases: Record<string, string>[] = [
      { 'If-Match': ',' },
      { 'If-Match': '"a' }, // a stray quote
      { 'If-Match': '"a", b c' }, // a space inside a bare etag
      { 'Idempotency-Key': 'k'.repeat(300) },
    ];
    for (const headers of cases) {
      expect((await request(object('files', 'refused/early'), { method: 'PUT', body: big, headers })).status).toBe(400);
      expect((await request(`${object('files', 'refused/early')}/versions`, { method: 'POST', body: big, headers })).status).toBe(400);
    }
    expect((await service.stagingProvider.list()).items).toEqual([]);
  });

  it('metadata with spaces at its ends comes back as it was stored', async () => {
    await put('files', 'meta/padded', 'x', { 'X-Meta-Note': "utf-8''%20padded%20" });
    const header = (await request(object('files', 'meta/padded'), { method: 'HEAD' })).headers.get('x-meta-note')!;
    expect(decodeURIComponent(header.slice("utf-8''".length))).toBe(' padded ');
  });
});

describe('versions', () => {
  it('X-Author with brackets out of place is 400 at once; X-Version-Message and X-Author take the utf-8\'\' form; an empty message is the default', async () => {
    for (const author of ['Ada <x', 'a>b', 'Ada <a@b> extra']) {
      const refused = await request(`${object('files', 'v/authors')}/versions`, { method: 'POST', body: 'x', headers: { 'X-Author': author } });
      expect(refused.status, author).toBe(400);
    }
    const encoded = await request(`${object('files', 'v/authors')}/versions?wait=true`, {
      method: 'POST',
      body: 'x',
      headers: { 'X-Version-Message': `utf-8''${encodeURIComponent('Überarbeitung €')}`, 'X-Author': `utf-8''${encodeURIComponent('José <jose@example.com>')}` },
    });
    expect(encoded.status).toBe(200);
    expect(await encoded.json()).toMatchObject({ message: 'Überarbeitung €', author: { name: 'José', email: 'jose@example.com' } });
    const empty = await request(`${object('files', 'v/authors')}/versions?wait=true`, { method: 'POST', body: 'y', headers: { 'X-Version-Message': '' } });
    expect(empty.status).toBe(200);
    expect(await empty.json()).toMatchObject({ message: 'version of v/authors' });
  });

  it('POST versions records message and author; list, read at a version, restore', async () => {
    const v1Response = await request(`${object('files', 'v/doc')}/versions?wait=true`, {
      method: 'POST',
      body: 'first',
      headers: { 'X-Version-Message': 'first draft', 'X-Author': 'Ada Lovelace <ada@example.com>' },
    });
    expect(v1Response.status).toBe(200);
    const v1 = (await v1Response.json()) as { versionId: string; message: string; author: { name: string; email: string } };
    expect(v1).toMatchObject({ message: 'first draft', author: { name: 'Ada Lovelace', email: 'ada@example.com' } });
    await request(`${object('files', 'v/doc')}/versions?wait=true`, { method: 'POST', body: 'second', headers: { 'X-Version-Message': 'second' } });

    const list = (await (await request(`${object('files', 'v/doc')}/versions`)).json()) as { items: { message: string }[] };
    expect(list.items.map((version) => version.message)).toEqual(['second', 'first draft']);
    expect(await (await request(`${object('files', 'v/doc')}?version=${v1.versionId}`)).text()).toBe('first');

    const restored = await request(`${object('files', 'v/doc')}/versions/${v1.versionId}/restore?wait=true`, { method: 'POST' });
    expect(restored.status).toBe(200);
    expect(await restored.json()).toMatchObject({ restoredFrom: v1.versionId, etag: sha256('first') });
    expect(await (await request(object('files', 'v/doc'))).text()).toBe('first');
  });

  it('X-Author: spaces around the name or inside <...> are layout, not part of the author', async () => {
    const response = await request(`${object('files', 'v/spaced')}/versions?wait=true`, {
      method: 'POST',
      body: 'x',
      headers: { 'X-Version-Message': 'spaced', 'X-Author': '  Ada   < ada@example.com >  ' },
    });
    expect(response.status).toBe(200);
    expect(((await response.json()) as { author: unknown }).author).toEqual({ name: 'Ada', email: 'ada@example.com' });
  });

  it('restoring a version that does not exist is 404 before any job is made', async () => {
    await put('files', 'v/none', 'x');
    const counts = () => service.deps.queues.queue('objects').getJobCounts('waiting', 'active', 'completed', 'failed', 'delayed');
    const before = await counts();
    for (const path of ['/versions/001m0000000000000000000000/restore?wait=true', '/versions/001m0000000000000000000000/restore']) {
      const response = await request(`${object('files', 'v/none')}${path}`, { method: 'POST' });
      expect(response.status, path).toBe(404);
      expect(((await response.json()) as { error: { code: string } }).error.code).toBe('NOT_FOUND');
    }
    expect(await counts()).toEqual(before);
  });

  it('a restore is accepted while the store cannot say whether the version exists: the job waits for the store', async () => {
    const version = (await (await request(`${object('files', 'v/outage')}/versions?wait=true`, { method: 'POST', body: 'kept' })).json()) as { versionId: string };
    await put('files', 'v/outage', 'replaced');
    const stores = service.deps.stores as Map<string, StorageProvider>;
    const files = stores.get('files')!;
    stores.set('files', interceptMethod(files, 'stat', () => async () => Promise.reject(new ProviderUnavailableError('disk is away'))));
    let response: Response;
    try {
      response = await request(`${object('files', 'v/outage')}/versions/${version.versionId}/restore`, { method: 'POST' });
    } finally {
      stores.set('files', files);
    }
    expect(response.status).toBe(202);
    const { jobId } = (await response.json()) as { jobId: string };
    await expect.poll(async () => ((await (await request(`/v1/jobs/${jobId}`)).json()) as { state: string }).state, { timeout: 10_000 }).toBe('completed');
    expect((await files.stat('v/outage')).etag).toBe(sha256('kept'));
  });

  it('diff is 501 on a store without diff', async () => {
    await put('files', 'v/nodiff', 'x');
    const response = await request(`${object('files', 'v/nodiff')}/diff?from=a`);
    expect(response.status).toBe(501);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe('NOT_SUPPORTED');
  });
});

describe('signed URLs', () => {
  it('a signed GET URL reads without a token; a tampered or expired one is 403', async () => {
    await put('files', 'share/me.txt', 'shared');
    const { url, expiresAt } = (await (await request(`${object('files', 'share/me.txt')}/url?expires=60`)).json()) as { url: string; expiresAt: string };
    expect(Date.parse(expiresAt)).toBeGreaterThan(Date.now());
    const path = new URL(url).pathname + new URL(url).search;
    const ok = await request(path);
    expect(ok.status).toBe(200);
    expect(await ok.text()).toBe('shared');

    const tampered = await request(path.replace('share/me.txt', 'share/other.txt'));
    expect(tampered.status).toBe(403);
    const expired = service.deps.signer.sign({ method: 'GET', store: 'files', key: 'share/me.txt', expires: Math.floor(Date.now() / 1000) - 1 });
    const refused = await request(expired);
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as { error: { message: string } }).error.message).toMatch(/expired/);
  });

  it('a signed URL is on the origin the client used: https behind a TLS-terminating proxy (X-Forwarded-Proto)', async () => {
    // With tokens, as a deployment behind a proxy has them: without, only loopback Host names are served.
    const app = createApp({ ...service.deps, config: { ...service.deps.config, apiTokens: [PROXIED_TOKEN] } });
    const handOut = async (headers: Record<string, string>) => {
      const response = await app.request(`${object('files', 'share/me.txt')}/url`, { headers: { Authorization: `Bearer ${PROXIED_TOKEN}`, ...headers } });
      expect(response.status, await response.clone().text()).toBe(200);
      return ((await response.json()) as { url: string }).url;
    };
    expect(await handOut({ Host: 'storage.example.com', 'X-Forwarded-Proto': 'https' })).toMatch(/^https:\/\/storage\.example\.com\/v1\/signed\/files\/share\/me\.txt\?/);
    expect(await handOut({ Host: 'storage.example.com' })).toMatch(/^http:\/\/storage\.example\.com\//);
    expect(await handOut({ Host: 'storage.example.com', 'X-Forwarded-Proto': 'gopher' })).toMatch(/^http:\/\//);
  });

  it('a signed URL works until, and not at, the expiresAt it was handed out with', async () => {
    const { url, expiresAt } = (await (await request(`${object('files', 'share/me.txt')}/url?expires=60`)).json()) as { url: string; expiresAt: string };
    const expires = Number(new URL(url).searchParams.get('expires'));
    expect(Date.parse(expiresAt)).toBe(expires * 1000);
    const grant = { method: 'GET' as const, store: 'files', key: 'share/me.txt', expires };
    const signature = new URL(url).searchParams.get('signature')!;
    expect(service.deps.signer.refusal(grant, signature, Date.parse(expiresAt) - 1)).toBeUndefined();
    expect(service.deps.signer.refusal(grant, signature, Date.parse(expiresAt))).toMatch(/expired/);
  });

  it('a signed PUT URL writes without a token, and is refused for GET', async () => {
    const { url } = (await (await request(`${object('mem', 'upload/here')}/url?method=PUT`)).json()) as { url: string };
    const path = new URL(url).pathname + new URL(url).search;
    expect((await request(path)).status).toBe(403);
    const response = await request(`${path}&wait=true`, { method: 'PUT', body: 'uploaded', headers: { 'X-Meta-Owner': 'ada' } });
    expect(response.status).toBe(200);
    const read = await request(object('mem', 'upload/here'));
    expect(await read.text()).toBe('uploaded');
    expect(read.headers.get('x-meta-owner')).toBe('ada');
    const stale = await request(`${path}&wait=true`, { method: 'PUT', body: 'again', headers: { 'If-Match': `"${sha256('other')}"` } });
    expect(stale.status).toBe(412);
    const other = await request(path, { method: 'DELETE' });
    expect(other.status).toBe(405);
    expect(other.headers.get('allow')).toBe('GET, HEAD, PUT');
  });
});
