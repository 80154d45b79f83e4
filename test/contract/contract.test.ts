/**
 * The provider contract (DESIGN §4) as executable specification: every provider in `fixtures` passes every case.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InvalidArgumentError, InvalidKeyError, NotFoundError, PreconditionFailedError, StorageError } from '../../src/providers/errors.js';
import { compareKeys } from '../../src/providers/keys.js';
import { listDelimited } from '../../src/providers/list-delimited.js';
import { statIfPresent } from '../../src/providers/object-info.js';
import type { ListOptions, ObjectInfo, StorageProvider } from '../../src/providers/types.js';
import { fixtures } from './providers.js';
import { allPages } from '../support/paging.js';

const sha256 = (content: Uint8Array | string) => createHash('sha256').update(content).digest('hex');

async function readText(provider: StorageProvider, key: string, versionId?: string): Promise<string> {
  return (await readBytes(provider, key, versionId)).toString('utf8');
}

/** What a read describes; its body is let go (a body left open holds its connection, and fails when that closes). */
async function readInfo(provider: StorageProvider, key: string): Promise<ObjectInfo> {
  const { info, body } = await provider.read(key);
  body.destroy();
  return info;
}

async function readBytes(provider: StorageProvider, key: string, versionId?: string): Promise<Buffer> {
  const { body } = await provider.read(key, versionId ? { versionId } : undefined);
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** A stream of `size` deterministic bytes in 64 KiB chunks, and the sha256 the content must have. */
function generatedStream(size: number): { stream: Readable; etag: string } {
  const chunk = randomBytes(64 * 1024);
  const hash = createHash('sha256');
  for (let sent = 0; sent < size; sent += chunk.length) hash.update(chunk.subarray(0, Math.min(chunk.length, size - sent)));
  const stream = Readable.from(
    (function* () {
      for (let sent = 0; sent < size; sent += chunk.length) yield chunk.subarray(0, Math.min(chunk.length, size - sent));
    })(),
  );
  return { stream, etag: hash.digest('hex') };
}

async function expectError(promise: Promise<unknown>, type: new (...args: never[]) => StorageError): Promise<void> {
  await expect(promise).rejects.toBeInstanceOf(type);
}

/** Runs `count` tasks with at most `width` in flight. */
async function inParallel(count: number, width: number, task: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < count) await task(next++);
    }),
  );
}

const invalidKeys: [string, string][] = [
  ['empty', ''],
  ['empty segment', 'a//b'],
  ['trailing slash', 'a/'],
  ['dot-dot segment', '../x'],
  ['inner dot-dot', 'a/../b'],
  ['dot segment', 'a/./b'],
  ['leading slash', '/abs'],
  ['backslash', 'a\\b'],
  ['NUL', 'a\u0000b'],
  ['newline', 'a\nb'],
  ['DEL', 'a\u007fb'],
  ['C1 control', 'a\u0085b'],
  ['lone surrogate', 'a\ud800b'],
  ['1,025 bytes', 'k'.repeat(1025)],
  ['1,025 bytes in multi-byte characters', `${'é'.repeat(512)}x`],
];

describe.each(fixtures)('provider contract: $name', (fixture) => {
  let provider: StorageProvider;
  let dispose: () => Promise<void>;

  beforeEach(async () => {
    ({ provider, dispose } = await fixture.create());
  });

  afterEach(async () => {
    await provider.close();
    await dispose();
  });

  describe('round trips', () => {
    it('round-trips bytes', async () => {
      const bytes = randomBytes(3000);
      const info = await provider.write('bytes.bin', bytes);
      expect(info).toMatchObject({ key: 'bytes.bin', size: 3000, etag: sha256(bytes) });
      expect((await readBytes(provider, 'bytes.bin')).equals(bytes)).toBe(true);
    });

    it('round-trips a string as UTF-8', async () => {
      const text = 'grüße, 世界 🌍';
      const info = await provider.write('text.txt', text);
      expect(info.size).toBe(Buffer.byteLength(text));
      expect(await readText(provider, 'text.txt')).toBe(text);
    });

    it('round-trips a stream', async () => {
      const { stream, etag } = generatedStream(300 * 1024);
      const info = await provider.write('stream.bin', stream);
      expect(info.etag).toBe(etag);
      expect(sha256(await readBytes(provider, 'stream.bin'))).toBe(etag);
    });

    it('round-trips an empty object', async () => {
      const info = await provider.write('empty', new Uint8Array(0));
      expect(info).toMatchObject({ size: 0, etag: sha256('') });
      expect((await readBytes(provider, 'empty')).length).toBe(0);
    });

    it('round-trips a 20 MiB streamed object', async () => {
      const size = 20 * 1024 * 1024;
      const { stream, etag } = generatedStream(size);
      const info = await provider.write('big/20mib.bin', stream);
      expect(info).toMatchObject({ size, etag });
      const { info: readInfo, body } = await provider.read('big/20mib.bin');
      expect(readInfo.etag).toBe(etag);
      const hash = createHash('sha256');
      let bytes = 0;
      for await (const chunk of body) {
        hash.update(chunk as Buffer);
        bytes += (chunk as Buffer).length;
      }
      expect(bytes).toBe(size);
      expect(hash.digest('hex')).toBe(etag);
    });

    it('etag is the sha256 of the content, in write, stat, read and list', async () => {
      const content = 'etag check';
      const written = await provider.write('e/tag', content);
      expect(written.etag).toBe(sha256(content));
      expect((await provider.stat('e/tag')).etag).toBe(sha256(content));
      expect((await readInfo(provider, 'e/tag')).etag).toBe(sha256(content));
      expect((await provider.list({ prefix: 'e/' })).items.map((item) => item.etag)).toEqual([sha256(content)]);
    });

    it('round-trips contentType and metadata; metadata names are lower-cased', async () => {
      await provider.write('doc.json', '{}', { contentType: 'application/json', metadata: { Owner: 'ada', 'build-id': '42' } });
      const info = await provider.stat('doc.json');
      expect(info.contentType).toBe('application/json');
      expect(info.metadata).toEqual({ owner: 'ada', 'build-id': '42' });
      expect((await readInfo(provider, 'doc.json')).metadata).toEqual({ owner: 'ada', 'build-id': '42' });
    });

    it('refuses a contentType a Content-Type header cannot carry (above U+00FF), storing nothing', async () => {
      const contentType = 'text/plain; title="Preis in €"';
      await expect(provider.write('ct', 'x', { contentType })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      await expect(provider.createVersion('ct', 'x', { message: 'm', contentType })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      await expect(provider.stat('ct')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    });

    it('defaults contentType to application/octet-stream and metadata to {}', async () => {
      await provider.write('plain', 'x');
      expect(await provider.stat('plain')).toMatchObject({ contentType: 'application/octet-stream', metadata: {} });
    });

    it('write replaces content, size and metadata', async () => {
      await provider.write('replace', 'first version, long', { metadata: { a: '1' } });
      await provider.write('replace', 'second', { metadata: { b: '2' } });
      expect(await readText(provider, 'replace')).toBe('second');
      expect(await provider.stat('replace')).toMatchObject({ size: 6, etag: sha256('second'), metadata: { b: '2' } });
    });

    it('reads a byte range when the provider supports range reads', async () => {
      if (!provider.capabilities.rangeReads) return;
      await provider.write('range', '0123456789');
      const { body } = await provider.read('range', { range: [2, 5] });
      const chunks: Buffer[] = [];
      for await (const chunk of body) chunks.push(chunk as Buffer);
      expect(Buffer.concat(chunks).toString()).toBe('2345');
      const tail = await provider.read('range', { range: [8, 100] });
      const tailChunks: Buffer[] = [];
      for await (const chunk of tail.body) tailChunks.push(chunk as Buffer);
      expect(Buffer.concat(tailChunks).toString()).toBe('89');
    });
  });

  describe('stat and not found', () => {
    it('stat describes the object without reading it', async () => {
      const before = Date.now();
      await provider.write('s/stat', 'hello', { contentType: 'text/plain' });
      const info = await provider.stat('s/stat');
      expect(info).toMatchObject({ key: 's/stat', size: 5, etag: sha256('hello'), contentType: 'text/plain' });
      expect(Date.parse(info.updatedAt)).toBeGreaterThanOrEqual(before - 1000);
    });

    it('throws NotFoundError for a missing key on read, stat and listVersions of nothing is empty', async () => {
      await expectError(provider.read('missing'), NotFoundError);
      await expectError(provider.stat('missing'), NotFoundError);
      expect((await provider.listVersions('missing')).items).toEqual([]);
    });

    it('throws NotFoundError for a missing version', async () => {
      await provider.createVersion('v/missing', 'one', { message: 'first' });
      const bogus = provider.kind === 'git' ? '0'.repeat(40) : '0000000000000000000000000z';
      await expectError(provider.read('v/missing', { versionId: bogus }), NotFoundError);
      await expectError(provider.stat('v/missing', { versionId: bogus }), NotFoundError);
      await expectError(provider.restoreVersion('v/missing', bogus), NotFoundError);
      // Said in words on every store, naming the key and the version: a HEAD's bare 404 (s3 with bucket versioning) too.
      for (const versionId of [bogus, 'nope']) {
        const message = ((await provider.stat('v/missing', { versionId }).catch((error: Error) => error)) as Error).message;
        expect(message).toMatch(/no version/);
        expect(message).toContain('v/missing');
        expect(message).toContain(versionId);
      }
    });
  });

  describe('delete', () => {
    it('is idempotent', async () => {
      await provider.write('d/once', 'x');
      await provider.delete('d/once');
      await provider.delete('d/once');
      await provider.delete('d/never-existed');
      await expectError(provider.stat('d/once'), NotFoundError);
      expect((await provider.list({ prefix: 'd/' })).items).toEqual([]);
    });

    it('keeps versions unless allVersions', async () => {
      const v1 = await provider.createVersion('d/kept', 'one', { message: 'one' });
      await provider.delete('d/kept');
      await expectError(provider.stat('d/kept'), NotFoundError);
      const versions = (await provider.listVersions('d/kept')).items.map((version) => version.versionId);
      expect(versions).toContain(v1.versionId);
      expect(await readText(provider, 'd/kept', v1.versionId)).toBe('one');

      await provider.createVersion('d/gone', 'two', { message: 'two' });
      await provider.delete('d/gone', { allVersions: true });
      await expectError(provider.stat('d/gone'), NotFoundError);
      expect((await provider.listVersions('d/gone')).items).toEqual([]);
    });
  });

  describe('list', () => {
    it('pages 2,500 keys by 1,000 with a prefix, losing and repeating none', async () => {
      const keys = Array.from({ length: 2500 }, (_, i) => `many/${String(i).padStart(4, '0')}`);
      await inParallel(keys.length, 16, (i) => provider.write(keys[i]!, `v${i}`));
      await provider.write('other/0', 'outside the prefix');
      await provider.write('many', 'a sibling that is not under many/');

      const pages = await allPages((cursor) => provider.list({ prefix: 'many/', cursor, limit: 1000 }));
      const pageSizes = pages.map((page) => page.length);
      const seen = pages.flat().map((item) => item.key);

      expect(pageSizes).toEqual([1000, 1000, 500]);
      expect(new Set(seen).size).toBe(seen.length);
      expect(seen).toEqual([...keys].sort(compareKeys));
    });

    it('pages keys that start with U+FEFF (a BOM) one by one, each once, and ends', async () => {
      const keys = ['\uFEFFa', '\uFEFFb', '\uFEFF'];
      for (const key of keys) await provider.write(key, key);
      const seen: string[] = [];
      let cursor: string | undefined;
      // Bounded: a cursor that loses the BOM starts the next page before the key again, for ever.
      for (let page = 0; page < 2 * keys.length; page++) {
        const listed = await provider.list({ prefix: '\uFEFF', limit: 1, cursor });
        seen.push(...listed.items.map((item) => item.key));
        cursor = listed.cursor;
        if (cursor === undefined) break;
      }
      expect(seen).toEqual([...keys].sort(compareKeys));
      expect(cursor).toBeUndefined();
    });

    it('groups keys by a delimiter: objects of one level and their common prefixes, paged, each once', async () => {
      const keys = ['photos/a.jpg', 'photos/2024/x', 'photos/2024/y', 'photos/2024/deep/q', 'photos/2025/z', 'photos/b', 'photosX', 'top'];
      for (const key of keys) await provider.write(key, key);
      const level = await listDelimited(provider, { prefix: 'photos/', delimiter: '/' });
      expect(level.items.map((item) => item.key)).toEqual(['photos/a.jpg', 'photos/b']);
      expect(level.items[0]).toMatchObject({ size: Buffer.byteLength('photos/a.jpg'), etag: sha256('photos/a.jpg') });
      expect(level.prefixes).toEqual(['photos/2024/', 'photos/2025/']);
      expect(level.cursor).toBeUndefined();
      expect(await listDelimited(provider, { delimiter: '/' })).toMatchObject({ prefixes: ['photos/'], items: [{ key: 'photosX' }, { key: 'top' }] });
      // A prefix inside a segment rolls up what follows it up to the delimiter; a delimiter may be longer than one character.
      expect((await listDelimited(provider, { prefix: 'photos/20', delimiter: '/' })).prefixes).toEqual(['photos/2024/', 'photos/2025/']);
      expect((await listDelimited(provider, { prefix: 'photos/', delimiter: '4/' })).prefixes).toEqual(['photos/2024/']);

      // One entry per page: the same entries in the same order, each once, and the last page has no cursor.
      const entries: string[] = [];
      let cursor: string | undefined;
      for (let page = 0; page < 10; page++) {
        const listed = await listDelimited(provider, { prefix: 'photos/', delimiter: '/', limit: 1, cursor });
        entries.push(...listed.items.map((item) => item.key), ...listed.prefixes);
        cursor = listed.cursor;
        if (cursor === undefined) break;
      }
      expect(entries).toEqual(['photos/2024/', 'photos/2025/', 'photos/a.jpg', 'photos/b']);
      expect(cursor).toBeUndefined();
    });

    it('pages one entry at a time past a prefix a key continues with U+10FFFF, and past one of 1,022 bytes, each once', async () => {
      const long = `${'l'.repeat(1021)}/`;
      const keys = ['odd/a', 'odd/\u{10ffff}x', 'odd2', `${long}x`, `${long}y`, 'z'];
      for (const key of keys) await provider.write(key, 'x');
      const entries: string[] = [];
      let cursor: string | undefined;
      for (let page = 0; page < 10; page++) {
        const listed = await listDelimited(provider, { delimiter: '/', limit: 1, cursor });
        entries.push(...listed.prefixes, ...listed.items.map((item) => item.key));
        cursor = listed.cursor;
        if (cursor === undefined) break;
      }
      expect(entries).toEqual([long, 'odd/', 'odd2', 'z']);
    });

    it("takes a plain listing's cursor as the position it names, even on a key that goes on with U+10FFFF", async () => {
      for (const key of ['d/a', 'd/\u{10ffff}', 'd/\u{10ffff}z', 'e']) await provider.write(key, 'x');
      const plain = await provider.list({ limit: 2 });
      expect(plain.items.map((item) => item.key)).toEqual(['d/a', 'd/\u{10ffff}']);
      // As S3 with that StartAfter: what follows the position, `d/` again for the key under it.
      const page = await listDelimited(provider, { delimiter: '/', cursor: plain.cursor });
      expect([...page.prefixes, ...page.items.map((item) => item.key)]).toEqual(['d/', 'e']);
      // A cursor of a listing by delimiter is refused by a plain listing, and by one of another delimiter, not read as
      // a position: it would skip keys that listing lists.
      const first = await listDelimited(provider, { delimiter: '/', limit: 1 });
      await expectError(provider.list({ cursor: first.cursor }), InvalidArgumentError);
      await expectError(listDelimited(provider, { delimiter: '-', cursor: first.cursor }), InvalidArgumentError);
      expect((await listDelimited(provider, { delimiter: '/', cursor: first.cursor })).items.map((item) => item.key)).toEqual(['e']);
    });

    it("steps over a common prefix's keys instead of reading them", async () => {
      await inParallel(300, 16, (i) => provider.write(`tree/big/${String(i).padStart(3, '0')}`, 'x'));
      await provider.write('tree/next', 'x');
      // After the jump past `tree/big/` (to `tree/big/` + U+10FFFF), a key that goes on with U+10FFFF still comes: paged through, not listed again.
      await provider.write('tree/big/\u{10ffff}', 'x');
      let calls = 0;
      const described: string[] = [];
      const counted = {
        list: (opts?: ListOptions) => (calls++, provider.list(opts)),
        listKeys: provider.listKeys && ((opts?: ListOptions) => (calls++, provider.listKeys!(opts))),
        stat: (key: string) => (described.push(key), provider.stat(key)),
      };
      const page = await listDelimited(counted, { prefix: 'tree/', delimiter: '/', limit: 2 });
      expect([...page.prefixes, ...page.items.map((item) => item.key)]).toEqual(['tree/big/', 'tree/next']);
      expect(page.items[0]).toMatchObject({ key: 'tree/next', size: 1, etag: sha256('x') });
      // Pages of three keys: reading the 300 would take a hundred.
      expect(calls).toBeLessThanOrEqual(4);
      // A store that lists keys alone (s3: a HEAD each to describe one) describes only the object it answers with.
      expect(described).toEqual(provider.listKeys ? ['tree/next'] : []);
    });

    it('lists in UTF-8 byte order with size and etag', async () => {
      const keys = ['b', 'a/z', 'a', 'a-b', 'é', 'Z', '\u{1F600}', '\uFFFD'];
      for (const key of keys) await provider.write(key, key);
      const { items, cursor } = await provider.list();
      expect(cursor).toBeUndefined();
      expect(items.map((item) => item.key)).toEqual([...keys].sort(compareKeys));
      for (const item of items) expect(item).toMatchObject({ size: Buffer.byteLength(item.key), etag: sha256(item.key) });
    });

    it('prefix matches the start of keys, not only whole segments', async () => {
      for (const key of ['logs/2024-01', 'logs/2024-02', 'logs/2025-01', 'logsbook']) await provider.write(key, 'x');
      expect((await provider.list({ prefix: 'logs/2024' })).items.map((item) => item.key)).toEqual(['logs/2024-01', 'logs/2024-02']);
      expect((await provider.list({ prefix: 'logs' })).items).toHaveLength(4);
      expect((await provider.list({ prefix: 'nothing/' })).items).toEqual([]);
    });

    it("a prefix may end in '.' or '..' (dotfiles list by prefix); whole '.' and '..' segments are refused", async () => {
      for (const key of ['.env', '..hidden', 'cfg/.gitignore', 'cfg/..x', 'cfg/a']) await provider.write(key, 'x');
      const keysUnder = async (prefix: string) => (await provider.list({ prefix })).items.map((item) => item.key);
      expect(await keysUnder('.')).toEqual(['..hidden', '.env']);
      expect(await keysUnder('..')).toEqual(['..hidden']);
      expect(await keysUnder('cfg/.')).toEqual(['cfg/..x', 'cfg/.gitignore']);
      expect(await keysUnder('cfg/..')).toEqual(['cfg/..x']);
      for (const prefix of ['./', '../', 'cfg/../', 'cfg/./x']) await expectError(provider.list({ prefix }), InvalidKeyError);
    });

    it('refuses a cursor it did not issue with InvalidArgumentError, and pages keys of 1,024 bytes', async () => {
      const longKeys = ['é', 'ü'].map((c) => c.repeat(512));
      for (const key of [...longKeys, 'k/1', 'k/2', 'k/3']) await provider.write(key, 'x');
      const { cursor } = await provider.list({ prefix: 'k/', limit: 1 });
      const base64url = (text: string) => Buffer.from(text, 'utf8').toString('base64url');
      const forged = [
        'zzzz',
        'AAAA',
        '__8', // not UTF-8
        '%%%',
        base64url('k/1'), // the position alone, as cursors used to be
        cursor!.slice(0, -1),
        cursor!.slice(0, -1) + (cursor!.endsWith('A') ? 'B' : 'A'),
        base64url(`k/${'a'.repeat(8192)}`),
      ];
      for (const bad of forged) await expectError(provider.list({ prefix: 'k/', cursor: bad }), InvalidArgumentError);
      expect((await provider.list({ prefix: 'k/', cursor })).items.map((item) => item.key)).toEqual(['k/2', 'k/3']);
      const longPages = await allPages((next) => provider.list({ cursor: next, limit: 1 }));
      expect(longPages.flat().map((item) => item.key)).toEqual([...longKeys, 'k/1', 'k/2', 'k/3'].sort(compareKeys));
    });
  });

  describe('versions', () => {
    it('createVersion records message and author, and makes the content current', async () => {
      const version = await provider.createVersion('v/doc', 'draft', {
        message: 'first draft',
        author: { name: 'Ada', email: 'ada@example.com' },
        contentType: 'text/plain',
      });
      expect(version).toMatchObject({ key: 'v/doc', size: 5, etag: sha256('draft'), message: 'first draft' });
      expect(version.author).toMatchObject({ name: 'Ada', email: 'ada@example.com' });
      expect(await readText(provider, 'v/doc')).toBe('draft');
      expect(await provider.stat('v/doc')).toMatchObject({ versionId: version.versionId, contentType: 'text/plain' });
    });

    it('listVersions is newest first and pages with a cursor', async () => {
      const ids: string[] = [];
      for (let i = 1; i <= 5; i++) ids.push((await provider.createVersion('v/paged', `rev ${i}`, { message: `rev ${i}` })).versionId);
      const first = await provider.listVersions('v/paged', { limit: 2 });
      const second = await provider.listVersions('v/paged', { limit: 2, cursor: first.cursor });
      const third = await provider.listVersions('v/paged', { limit: 2, cursor: second.cursor });
      const listed = [...first.items, ...second.items, ...third.items].map((version) => version.versionId);
      expect(listed).toEqual([...ids].reverse());
      expect(third.cursor).toBeUndefined();
      expect(first.items[0]).toMatchObject({ message: 'rev 5', etag: sha256('rev 5') });
    });

    it('reads and stats an older version', async () => {
      const v1 = await provider.createVersion('v/old', 'one', { message: 'one', contentType: 'text/plain' });
      await provider.createVersion('v/old', 'two', { message: 'two' });
      expect(await readText(provider, 'v/old', v1.versionId)).toBe('one');
      expect(await provider.stat('v/old', { versionId: v1.versionId })).toMatchObject({
        size: 3,
        etag: sha256('one'),
        versionId: v1.versionId,
      });
      expect(await readText(provider, 'v/old')).toBe('two');
    });

    it('restoreVersion brings old content back as a new version', async () => {
      const v1 = await provider.createVersion('v/restore', 'original', { message: 'one' });
      await provider.createVersion('v/restore', 'changed', { message: 'two' });
      const restored = await provider.restoreVersion('v/restore', v1.versionId, { message: 'back to one' });
      expect(restored.versionId).not.toBe(v1.versionId);
      expect(restored).toMatchObject({ etag: sha256('original'), message: 'back to one' });
      expect(await readText(provider, 'v/restore')).toBe('original');
      const newest = (await provider.listVersions('v/restore')).items[0];
      expect(newest?.versionId).toBe(restored.versionId);
    });

    it('plain writes record versions exactly when versioning is every-write', async () => {
      await provider.write('v/plain', 'a');
      await provider.write('v/plain', 'b');
      const versions = (await provider.listVersions('v/plain')).items;
      if (provider.capabilities.versioning === 'every-write') {
        expect(versions.map((version) => version.etag)).toEqual([sha256('b'), sha256('a')]);
      } else {
        expect(versions).toEqual([]);
        expect((await provider.stat('v/plain')).versionId).toBeUndefined();
      }
    });

    it('versions are immutable: a later write does not change them', async () => {
      const v1 = await provider.createVersion('v/immutable', 'kept', { message: 'keep' });
      await provider.write('v/immutable', 'overwritten');
      expect(await readText(provider, 'v/immutable', v1.versionId)).toBe('kept');
    });
  });

  describe('preconditions', () => {
    it('ifMatch writes only over the expected etag', async () => {
      const first = await provider.write('p/cas', 'one');
      const second = await provider.write('p/cas', 'two', { ifMatch: first.etag });
      expect(second.etag).toBe(sha256('two'));
      await expectError(provider.write('p/cas', 'three', { ifMatch: first.etag }), PreconditionFailedError);
      expect(await readText(provider, 'p/cas')).toBe('two');
    });

    it('ifMatch on a missing object fails and creates nothing', async () => {
      await expectError(provider.write('p/absent', 'x', { ifMatch: sha256('x') }), PreconditionFailedError);
      await expectError(provider.write('p/absent', 'x', { ifMatch: '*' }), PreconditionFailedError);
      await expectError(provider.stat('p/absent'), NotFoundError);
    });

    it("ifMatch '*' matches any existing object; a list matches any of its etags", async () => {
      await provider.write('p/any', 'one');
      expect((await provider.write('p/any', 'two', { ifMatch: '*' })).etag).toBe(sha256('two'));
      await expectError(provider.write('p/any', 'x', { ifMatch: [sha256('one'), sha256('x')] }), PreconditionFailedError);
      expect((await provider.write('p/any', 'three', { ifMatch: [sha256('one'), sha256('two')] })).etag).toBe(sha256('three'));
      await expectError(provider.createVersion('p/any', 'v', { message: 'm', ifMatch: [sha256('two')] }), PreconditionFailedError);
      expect(await readText(provider, 'p/any')).toBe('three');
    });

    it("ifNoneMatch '*' creates a missing object, refuses an existing one unchanged, and creates again after a delete", async () => {
      const created = await provider.write('p/create', 'one', { ifNoneMatch: '*', contentType: 'text/plain', metadata: { n: '1' } });
      expect(created.etag).toBe(sha256('one'));
      const before = await provider.stat('p/create');
      const versionsBefore = (await provider.listVersions('p/create')).items;
      await expectError(provider.write('p/create', 'two', { ifNoneMatch: '*', metadata: { n: '2' } }), PreconditionFailedError);
      await expectError(provider.write('p/create', generatedStream(300 * 1024).stream, { ifNoneMatch: '*' }), PreconditionFailedError);
      expect(await readText(provider, 'p/create')).toBe('one');
      const after = await provider.stat('p/create');
      expect(after).toMatchObject({ etag: before.etag, size: 3, contentType: 'text/plain', metadata: { n: '1' }, updatedAt: before.updatedAt });
      expect(after.versionId).toBe(before.versionId);
      expect((await provider.listVersions('p/create')).items).toEqual(versionsBefore);

      await provider.delete('p/create');
      // Streamed past s3's multipart threshold: the create-only condition travels with the staged upload's copy too.
      const { stream, etag } = generatedStream(20 * 1024 * 1024);
      expect((await provider.write('p/create', stream, { ifNoneMatch: '*' })).etag).toBe(etag);
      expect((await provider.stat('p/create')).etag).toBe(etag);
      await expectError(provider.write('p/create', 'three', { ifNoneMatch: '*' }), PreconditionFailedError);
      expect((await provider.stat('p/create')).etag).toBe(etag);
    });

    it('ifNoneMatch together with ifMatch: both must hold', async () => {
      // Missing: ifNoneMatch holds, ifMatch does not.
      await expectError(provider.write('p/both', 'x', { ifNoneMatch: '*', ifMatch: '*' }), PreconditionFailedError);
      await expectError(provider.createVersion('p/both', 'x', { message: 'm', ifNoneMatch: '*', ifMatch: sha256('x') }), PreconditionFailedError);
      await expectError(provider.stat('p/both'), NotFoundError);
      expect((await provider.listVersions('p/both')).items).toEqual([]);
      // Existing: ifMatch holds, ifNoneMatch does not.
      const first = await provider.write('p/both', 'one');
      await expectError(provider.write('p/both', 'two', { ifNoneMatch: '*', ifMatch: first.etag }), PreconditionFailedError);
      await expectError(provider.createVersion('p/both', 'two', { message: 'm', ifNoneMatch: '*', ifMatch: '*' }), PreconditionFailedError);
      expect(await readText(provider, 'p/both')).toBe('one');
      expect((await provider.stat('p/both')).etag).toBe(first.etag);
    });

    it("createVersion with ifNoneMatch '*' records a version only while the object is missing", async () => {
      const v1 = await provider.createVersion('p/vcreate', 'one', { message: 'first', ifNoneMatch: '*' });
      expect(v1).toMatchObject({ etag: sha256('one'), message: 'first' });
      await expectError(provider.createVersion('p/vcreate', 'two', { message: 'second', ifNoneMatch: '*' }), PreconditionFailedError);
      expect(await readText(provider, 'p/vcreate')).toBe('one');
      expect((await provider.stat('p/vcreate')).versionId).toBe(v1.versionId);
      expect((await provider.listVersions('p/vcreate')).items.map((version) => version.versionId)).toEqual([v1.versionId]);

      // A deleted object is a missing one, though its versions stay.
      await provider.delete('p/vcreate');
      const v2 = await provider.createVersion('p/vcreate', 'three', { message: 'third', ifNoneMatch: '*' });
      expect(await readText(provider, 'p/vcreate')).toBe('three');
      expect((await provider.listVersions('p/vcreate')).items.map((version) => version.versionId)).toEqual([v2.versionId, v1.versionId]);
    });

    // In one process; on s3 it holds on any server since session 20: the provider checks and writes a key one
    // mutation at a time (`committed`), whether the server honours If-None-Match or not (s3rver does not).
    it('concurrent create-only writes and versions of one new key: exactly one succeeds', async () => {
      const bodies = Array.from({ length: 8 }, (_, i) => `creator ${i} `.repeat(2000 + i));
      const outcomes = await Promise.allSettled(
        bodies.map((body, i) =>
          i % 2 === 0
            ? provider.write('p/race', body, { ifNoneMatch: '*' })
            : provider.createVersion('p/race', body, { message: `creator ${i}`, ifNoneMatch: '*' }),
        ),
      );
      const winners = outcomes.flatMap((outcome, i) => (outcome.status === 'fulfilled' ? [i] : []));
      expect(winners).toHaveLength(1);
      for (const outcome of outcomes) {
        if (outcome.status === 'rejected') expect(outcome.reason).toBeInstanceOf(PreconditionFailedError);
      }
      const winner = bodies[winners[0]!]!;
      expect(await readText(provider, 'p/race')).toBe(winner);
      expect(await provider.stat('p/race')).toMatchObject({ etag: sha256(winner), size: Buffer.byteLength(winner) });
      // The losers left no version behind: only a winning createVersion, or any winner where every write is one.
      const versioned = winners[0]! % 2 === 1 || provider.capabilities.versioning === 'every-write';
      expect((await provider.listVersions('p/race')).items).toHaveLength(versioned ? 1 : 0);
    });
  });

  describe('expected etag', () => {
    it('a content whose sha256 is not the expected one is refused with nothing changed; the expected one is written', async () => {
      await provider.write('e/checked', 'kept');
      const before = { info: await provider.stat('e/checked'), versions: (await provider.listVersions('e/checked')).items };
      const big = generatedStream(20 * 1024 * 1024); // past s3's multipart threshold: the staged upload is checked too
      for (const mutation of [
        () => provider.write('e/checked', 'damaged', { expectedEtag: sha256('sent') }),
        () => provider.write('e/checked', big.stream, { expectedEtag: sha256('sent') }),
        () => provider.createVersion('e/checked', 'damaged', { message: 'm', expectedEtag: sha256('sent') }),
      ]) {
        await expectError(mutation(), InvalidArgumentError);
      }
      expect(await provider.stat('e/checked')).toEqual(before.info);
      expect((await provider.listVersions('e/checked')).items).toEqual(before.versions);
      expect((await provider.write('e/checked', 'sent', { expectedEtag: sha256('sent') })).etag).toBe(sha256('sent'));
      expect((await provider.createVersion('e/checked', 'sent v', { message: 'm', expectedEtag: sha256('sent v') })).etag).toBe(sha256('sent v'));
      expect(await readText(provider, 'e/checked')).toBe('sent v');
    });
  });

  describe('fences', () => {
    /** A mutation's state as a caller can see it: current object (or none) and versions. */
    async function snapshot(key: string) {
      return { current: await statIfPresent(provider, key), versions: (await provider.listVersions(key)).items };
    }

    it('a fence that refuses abandons the mutation: nothing changes, and its own error comes back', async () => {
      const first = await provider.createVersion('f/refused', 'one', { message: 'first' });
      await provider.write('f/refused', 'two');
      const before = await snapshot('f/refused');
      const refusal = new Error('this run lost its lock');
      const fence = async () => Promise.reject(refusal);
      const big = generatedStream(20 * 1024 * 1024); // past s3's multipart threshold: the staged upload's copy is refused
      for (const mutation of [
        () => provider.write('f/refused', 'three', { fence }),
        () => provider.write('f/refused', big.stream, { fence }),
        () => provider.createVersion('f/refused', 'four', { message: 'refused', fence }),
        () => provider.restoreVersion('f/refused', first.versionId, { fence }),
        () => provider.delete('f/refused', { fence }),
        () => provider.delete('f/refused', { allVersions: true, fence }),
      ]) {
        await expect(mutation()).rejects.toBe(refusal);
      }
      expect(await snapshot('f/refused')).toEqual(before);
      expect(await readText(provider, 'f/refused')).toBe('two');
    });

    it('the fence is passed once per mutation, while the mutation is not yet visible', async () => {
      const first = await provider.createVersion('f/order', 'one', { message: 'first' });
      const seen: (string | undefined)[] = [];
      const fence = async () => void seen.push((await snapshot('f/order')).current?.etag);
      await provider.write('f/order', 'two', { fence });
      await provider.createVersion('f/order', 'three', { message: 'third', fence });
      await provider.restoreVersion('f/order', first.versionId, { fence });
      await provider.delete('f/order', { fence });
      // Each fence saw what the store held before its own mutation.
      expect(seen).toEqual([sha256('one'), sha256('two'), sha256('three'), sha256('one')]);
      await expectError(provider.stat('f/order'), NotFoundError);
    });
  });

  describe('keys', () => {
    it.each(invalidKeys)('rejects a key with %s on every operation', async (_name, key) => {
      await expectError(provider.write(key, 'x'), InvalidKeyError);
      await expectError(provider.read(key), InvalidKeyError);
      await expectError(provider.stat(key), InvalidKeyError);
      await expectError(provider.delete(key), InvalidKeyError);
      await expectError(provider.createVersion(key, 'x', { message: 'm' }), InvalidKeyError);
      await expectError(provider.listVersions(key), InvalidKeyError);
      expect((await provider.list()).items).toEqual([]);
    });

    it('accepts Unicode keys and keeps them byte-exact (no normalisation)', async () => {
      const composed = 'café/naïve-\u00e9';
      const decomposed = 'café/naïve-e\u0301';
      await provider.write(composed, 'composed');
      await provider.write(decomposed, 'decomposed');
      await provider.write('日本語/ключ/🗝️', 'emoji');
      expect(await readText(provider, composed)).toBe('composed');
      expect(await readText(provider, decomposed)).toBe('decomposed');
      expect(await readText(provider, '日本語/ключ/🗝️')).toBe('emoji');
    });

    it('accepts a key of exactly 1,024 bytes', async () => {
      const key = 'k'.repeat(1024);
      await provider.write(key, 'long');
      expect(await readText(provider, key)).toBe('long');
      const nested = `${'a'.repeat(300)}/${'b'.repeat(300)}/${'c'.repeat(422)}`;
      expect(Buffer.byteLength(nested)).toBe(1024);
      await provider.write(nested, 'nested');
      expect(await readText(provider, nested)).toBe('nested');
    });

    it('lets a key and a key below it coexist (a and a/b)', async () => {
      await provider.write('a', 'file a');
      await provider.write('a/b', 'file a/b');
      expect(await readText(provider, 'a')).toBe('file a');
      expect(await readText(provider, 'a/b')).toBe('file a/b');
      expect((await provider.list({ prefix: 'a' })).items.map((item) => item.key)).toEqual(['a', 'a/b']);
    });
  });

  describe('concurrency', () => {
    it('20 concurrent writes to one key leave one writer’s whole content', async () => {
      const bodies = Array.from({ length: 20 }, (_, i) => `writer ${i} `.repeat(1000 + i));
      await Promise.all(bodies.map((body) => provider.write('race', body)));
      const content = await readText(provider, 'race');
      const info = await provider.stat('race');
      expect(bodies).toContain(content);
      expect(info.etag).toBe(sha256(content));
      expect(info.size).toBe(Buffer.byteLength(content));
    });
  });

  describe('stats and health', () => {
    it('stats count current objects, bytes and versions', async () => {
      await provider.write('st/a', '12345');
      await provider.write('st/b', '123');
      await provider.createVersion('st/c', '1', { message: 'v' });
      const stats = await provider.stats();
      expect(stats.kind).toBe(provider.kind);
      expect(stats.objects).toBe(3);
      expect(stats.bytes).toBe(9);
      expect(stats.versions).toBeGreaterThanOrEqual(1);
    });

    it('health reports ok with a latency', async () => {
      const report = await provider.health();
      expect(report.status).toBe('ok');
      expect(typeof report.detail).toBe('string');
      expect(report.latencyMs).toBeGreaterThanOrEqual(0);
    });
  });
});
