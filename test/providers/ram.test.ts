import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { readAhead, sha256Hex } from '../../src/providers/body.js';
import { InvalidArgumentError, NotFoundError, PayloadTooLargeError, StorageFullError } from '../../src/providers/errors.js';
import { ENTRY_OVERHEAD_BYTES, RamProvider } from '../../src/providers/ram.js';
import { DEFAULT_CONTENT_TYPE } from '../../src/providers/types.js';
import { ALPHABET, mintAfter, newVersionId } from '../../src/providers/version-id.js';
import { allPages } from '../support/paging.js';

/** A number in the version ids' base32 (their leading milliseconds). */
/** What an entry of `key` (a version's, with `message`) counts against the budget besides its content. */
function entryBytes(key: string, message = ''): number {
  return ENTRY_OVERHEAD_BYTES + key.length + DEFAULT_CONTENT_TYPE.length + message.length;
}

function base32(value: number, width: number): string {
  let out = '';
  for (let i = 0; i < width; i++, value = Math.floor(value / 32)) out = ALPHABET[value % 32]! + out;
  return out;
}

describe('ram provider', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'kyozo-ram-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a write over the byte budget fails with StorageFullError and changes nothing', async () => {
    const ram = new RamProvider({ maxBytes: 100 + 2 * entryBytes('a') });
    await ram.write('a', 'x'.repeat(60));
    await expect(ram.write('b', 'y'.repeat(50))).rejects.toBeInstanceOf(StorageFullError);
    await expect(ram.stat('b')).rejects.toThrow();
    expect((await ram.stats()).bytes).toBe(60);
    // replacing an object only needs the difference
    await ram.write('a', 'z'.repeat(100));
    expect((await ram.stats()).bytes).toBe(100);
  });

  it('a body larger than the whole budget is PayloadTooLarge and is not buffered past the budget', async () => {
    const ram = new RamProvider({ maxBytes: 10 });
    await expect(ram.write('big', 'x'.repeat(11))).rejects.toBeInstanceOf(PayloadTooLargeError);
  });

  it('versions count against the budget and deleting all versions frees it', async () => {
    const ram = new RamProvider({ maxBytes: 100 + entryBytes('doc') + entryBytes('doc', 'one') });
    await ram.createVersion('doc', 'x'.repeat(40), { message: 'one' }); // 40 current + 40 version, and their entries
    await expect(ram.createVersion('doc', 'y'.repeat(40), { message: 'two' })).rejects.toBeInstanceOf(StorageFullError);
    await ram.delete('doc', { allVersions: true });
    expect((await ram.stats()).detail).toMatchObject({ usedBytes: 0 });
    await ram.createVersion('doc', 'y'.repeat(40), { message: 'two' });
  });

  it('keeps its own copy of a written buffer', async () => {
    const ram = new RamProvider({ maxBytes: 1000 });
    const bytes = Buffer.from('original');
    await ram.write('k', bytes);
    bytes.write('mutated!');
    const { body } = await ram.read('k');
    const chunks: Buffer[] = [];
    for await (const chunk of body) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).toString()).toBe('original');
  });

  it('hands out results through which a caller cannot change the store', async () => {
    const ram = new RamProvider({ maxBytes: 1000 });
    /** A frozen result refuses the change (a TypeError in strict code): either way the store must not see it. */
    const tamper = (change: () => void) => {
      try {
        change();
      } catch (error) {
        if (!(error instanceof TypeError)) throw error;
      }
    };
    const author = { name: 'Ada', email: 'ada@example.com' };
    const version = await ram.createVersion('v', 'versioned', { message: 'one', author, metadata: { owner: 'ada' } });
    const written = await ram.write('k', 'content', { contentType: 'text/plain', metadata: { owner: 'ada' } });
    const expected = { ...written, metadata: { ...written.metadata } };
    const expectedVersion = { ...version, author: { ...version.author! } };

    author.name = 'Eve';
    tamper(() => (written.metadata.owner = 'eve'));
    tamper(() => (written.size = 0));
    const stat = await ram.stat('k');
    tamper(() => (stat.metadata.extra = 'x'));
    tamper(() => (stat.etag = 'forged'));
    const { info, body } = await ram.read('k');
    body.destroy();
    tamper(() => (info.metadata.owner = 'mallory'));
    const [listed] = (await ram.list({ prefix: 'k' })).items;
    tamper(() => (listed!.contentType = 'text/html'));
    tamper(() => (version.author!.name = 'Eve'));
    tamper(() => (version.size = 0));
    const [entry] = (await ram.listVersions('v')).items;
    tamper(() => (entry!.message = 'rewritten'));
    const atVersion = await ram.stat('v', { versionId: version.versionId });
    tamper(() => (atVersion.metadata.owner = 'eve'));

    expect(await ram.stat('k')).toEqual(expected);
    expect((await ram.list({ prefix: 'k' })).items).toEqual([expected]);
    expect((await ram.listVersions('v')).items).toEqual([expectedVersion]);
    expect((await ram.stat('v', { versionId: version.versionId })).metadata).toEqual({ owner: 'ada' });
    expect((await ram.stat('v')).metadata).toEqual({ owner: 'ada' });
  });

  it('finds, pages and deletes versions by id among thousands of one key', async () => {
    const ram = new RamProvider({ maxBytes: 1_000_000 });
    const ids: string[] = [];
    for (let i = 0; i < 2000; i++) ids.push((await ram.createVersion('doc', `rev ${i}`, { message: `rev ${i}` })).versionId);
    const listed = (await allPages((cursor) => ram.listVersions('doc', { limit: 300, cursor }))).flat().map((version) => version.versionId);
    expect(listed).toEqual([...ids].reverse());
    expect(await ram.stat('doc', { versionId: ids[1234]! })).toMatchObject({ etag: sha256Hex('rev 1234'), versionId: ids[1234] });

    await ram.deleteVersion('doc', ids[1234]!);
    await ram.deleteVersion('doc', ids[1234]!);
    await expect(ram.stat('doc', { versionId: ids[1234]! })).rejects.toBeInstanceOf(NotFoundError);
    const newest = await ram.listVersions('doc', { limit: 2000 - 1236 });
    expect(newest.items.at(-1)?.versionId).toBe(ids[1236]);
    const across = await ram.listVersions('doc', { limit: 2, cursor: newest.cursor });
    expect(across.items.map((version) => version.versionId)).toEqual([ids[1235], ids[1233]]);
    expect((await ram.stats()).versions).toBe(1999);
  });

  it('counts hits and misses', async () => {
    const ram = new RamProvider({ maxBytes: 1000 });
    await ram.write('k', 'v');
    await ram.read('k');
    await ram.stat('k');
    await expect(ram.read('missing')).rejects.toThrow();
    expect((await ram.stats()).detail).toMatchObject({ hits: 2, misses: 1 });
  });

  it('exportSnapshot writes the state it was called in, whatever changes while the file is written', async () => {
    const source = new RamProvider({ maxBytes: 64 * 1024 * 1024 });
    const body = 'x'.repeat(1000);
    for (let i = 0; i < 100; i++) await source.write(`k${String(i).padStart(3, '0')}`, body);
    for (let i = 0; i < 100; i++) await source.createVersion('v', `version ${i}`, { message: `m${i}` });
    const versionsAtExport = (await source.listVersions('v', { limit: 1000 })).items.map((version) => version.versionId);
    const statsAtExport = await source.stats();
    const file = path.join(dir, 'snap.ndjson');
    /** Object and version lines already in the snapshot's temp file. */
    const progress = async () => {
      const temp = (await readdir(dir)).find((name) => name.startsWith('.tmp-'));
      const text = temp === undefined ? '' : await readFile(path.join(dir, temp), 'utf8').catch(() => '');
      return { objects: text.split('"type":"object"').length - 1, versions: text.split('"type":"version"').length - 1 };
    };
    let exporting = true;
    const done = source.exportSnapshot(file).finally(() => (exporting = false));
    let rewritten = false;
    let deleted = 0;
    while (exporting) {
      await new Promise((resolve) => setImmediate(resolve));
      const written = await progress();
      if (!rewritten && written.objects >= 10) {
        // An exported key deleted and written again moves to the end of the live map.
        await source.delete('k000');
        await source.write('k000', body);
        rewritten = true;
      }
      if (written.versions >= 30 && deleted < 5) {
        // Retention removes exported versions: the live list shifts under an export walking it.
        await source.deleteVersion('v', versionsAtExport.at(-1 - deleted)!);
        deleted++;
      }
    }
    await done;
    expect(rewritten && deleted === 5).toBe(true);

    const target = new RamProvider({ maxBytes: 64 * 1024 * 1024 });
    await target.importSnapshot(file);
    const imported = (await target.listVersions('v', { limit: 1000 })).items;
    expect(imported.map((version) => version.versionId)).toEqual(versionsAtExport);
    const { objects, bytes, versions, detail } = await target.stats();
    expect({ objects, bytes, versions, usedBytes: detail!.usedBytes }).toEqual({
      objects: statsAtExport.objects,
      bytes: statsAtExport.bytes,
      versions: statsAtExport.versions,
      usedBytes: statsAtExport.detail!.usedBytes,
    });
  });

  it('exportSnapshot / importSnapshot round-trip every object, its metadata and its versions', async () => {
    const source = new RamProvider({ maxBytes: 1_000_000 });
    await source.write('plain', Buffer.from([0, 1, 2, 255]), { contentType: 'application/x-bytes', metadata: { owner: 'ada' } });
    const v1 = await source.createVersion('doc', 'one', { message: 'first', author: { name: 'Ada', email: 'a@x' } });
    const v2 = await source.createVersion('doc', 'two', { message: 'second' });
    await source.write('gone', 'x');
    await source.createVersion('gone', 'kept in history', { message: 'h' });
    await source.delete('gone');
    const file = path.join(dir, 'snap.ndjson');
    await source.exportSnapshot(file);

    const target = new RamProvider({ maxBytes: 1_000_000 });
    await target.write('will-be-replaced', 'x');
    await target.importSnapshot(file);
    expect((await target.list()).items).toEqual((await source.list()).items);
    expect((await target.listVersions('doc')).items).toEqual((await source.listVersions('doc')).items);
    expect((await target.listVersions('doc')).items.map((v) => v.versionId)).toEqual([v2.versionId, v1.versionId]);
    expect((await target.listVersions('gone')).items).toHaveLength(1);
    expect(await target.stat('doc', { versionId: v1.versionId })).toEqual(await source.stat('doc', { versionId: v1.versionId }));
    expect(await target.stats()).toMatchObject({ objects: 2, versions: 3 });
  });

  it('refuses a snapshot entry the store could not have made, and keeps its content (session 11)', async () => {
    const source = new RamProvider({ maxBytes: 10_000 });
    await source.write('k', 'abc', { metadata: { owner: 'ada' } });
    await source.createVersion('v', 'one', { message: 'm' });
    const file = path.join(dir, 'snap.ndjson');
    await source.exportSnapshot(file);
    const lines = (await readFile(file, 'utf8')).split('\n');
    /** The file with the entry of `key` changed by `edit`. */
    const edited = async (key: string, edit: (entry: Record<string, any>) => void) => {
      const changed = lines.map((line) => {
        if (!line.startsWith('{') || !line.includes(`"key":"${key}"`)) return line;
        const entry = JSON.parse(line) as Record<string, any>;
        edit(entry);
        return JSON.stringify(entry);
      });
      await writeFile(file, changed.join('\n'));
    };
    const target = new RamProvider({ maxBytes: 10_000 });
    await target.write('mine', 'kept');
    for (const [key, edit, why] of [
      ['k', (entry: Record<string, any>) => (entry.info.size = 999_999), /size says 999999 bytes, its content has 3/],
      ['k', (entry: Record<string, any>) => (entry.info.key = '../k'), /'\.' or '\.\.' segment/],
      ['k', (entry: Record<string, any>) => (entry.info.metadata = null), /content type or metadata is missing/],
      ['k', (entry: Record<string, any>) => delete entry.info, /an entry:/],
      ['v', (entry: Record<string, any>) => (entry.info.versionId = ''), /version id "" is not one this store mints/],
    ] as const) {
      await edited(key, edit);
      await expect(target.importSnapshot(file)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(why) });
    }
    expect((await target.list()).items.map((item) => item.key)).toEqual(['mine']);
    // What an earlier version stored and this one would refuse at write (a content type past U+00FF) is taken.
    await edited('k', (entry) => (entry.info.contentType = 'text/plain; name="résumé—文件.txt"'));
    await target.importSnapshot(file);
    expect((await target.stat('k')).contentType).toBe('text/plain; name="résumé—文件.txt"');
  });

  it('refuses a corrupt snapshot and keeps its content', async () => {
    const source = new RamProvider({ maxBytes: 1000 });
    await source.write('k', 'original');
    const file = path.join(dir, 'snap.ndjson');
    await source.exportSnapshot(file);
    const text = await readFile(file, 'utf8');
    await writeFile(file, text.replace(Buffer.from('original').toString('base64'), Buffer.from('tampered').toString('base64')));
    const target = new RamProvider({ maxBytes: 1000 });
    await target.write('mine', 'stays');
    await expect(target.importSnapshot(file)).rejects.toBeInstanceOf(InvalidArgumentError);
    expect((await target.list()).items.map((item) => item.key)).toEqual(['mine']);
  });

  it('refuses a snapshot cut short, one that is not JSON, and a missing one, keeping its content', async () => {
    const source = new RamProvider({ maxBytes: 10_000 });
    for (let i = 0; i < 5; i++) await source.write(`k${i}`, `content ${i}`);
    const file = path.join(dir, 'snap.ndjson');
    await source.exportSnapshot(file);
    const lines = (await readFile(file, 'utf8')).split('\n');
    const target = new RamProvider({ maxBytes: 10_000 });
    await target.write('mine', 'stays');
    // Cut at a line boundary after three of the five objects: no end line.
    await writeFile(path.join(dir, 'cut.ndjson'), `${lines.slice(0, 1 + 3 * 2).join('\n')}\n`);
    await expect(target.importSnapshot(path.join(dir, 'cut.ndjson'))).rejects.toThrow(/cut short/);
    await writeFile(path.join(dir, 'garbage.ndjson'), `${lines[0]}\n{not json\n`);
    await expect(target.importSnapshot(path.join(dir, 'garbage.ndjson'))).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(target.importSnapshot(path.join(dir, 'missing.ndjson'))).rejects.toBeInstanceOf(NotFoundError);
    expect((await target.list()).items.map((item) => item.key)).toEqual(['mine']);
  });

  it('writes an object larger than one content line across several, and reads it back', async () => {
    const source = new RamProvider({ maxBytes: 64 * 1024 * 1024 });
    const big = Buffer.alloc(49 * 1024 * 1024, 7); // over the 48 MiB of content per line
    await source.write('big', big);
    const file = path.join(dir, 'snap.ndjson');
    await source.exportSnapshot(file);
    const entry = (await readFile(file, 'utf8')).split('\n', 2)[1]!;
    expect(JSON.parse(entry)).toMatchObject({ type: 'object', parts: 2 });
    const target = new RamProvider({ maxBytes: 64 * 1024 * 1024 });
    await target.importSnapshot(file);
    expect(await target.stat('big')).toEqual(await source.stat('big'));
  });

  it('a version listed twice in a snapshot counts once', async () => {
    const source = new RamProvider({ maxBytes: 10_000 });
    const version = await source.createVersion('doc', 'x'.repeat(100), { message: 'm' });
    await source.delete('doc');
    const file = path.join(dir, 'snap.ndjson');
    await source.exportSnapshot(file);
    // header, the version's line and its content line, end line: repeat the version, count it in the end line.
    const [header, entry, content] = (await readFile(file, 'utf8')).split('\n');
    await writeFile(file, [header, entry, content, entry, content, JSON.stringify({ end: true, entries: 2 }), ''].join('\n'));
    const target = new RamProvider({ maxBytes: 10_000 });
    await target.importSnapshot(file);
    expect((await target.listVersions('doc')).items.map((item) => item.versionId)).toEqual([version.versionId]);
    expect((await target.stats()).detail?.usedBytes).toBe(100 + entryBytes('doc', 'm'));
    await target.deleteVersion('doc', version.versionId);
    expect((await target.listVersions('doc')).items).toEqual([]);
  });

  it('an object listed twice in a format-1 snapshot is held to the budget by its last copy, not by both', async () => {
    const object = (key: string, content: Buffer) =>
      JSON.stringify({
        type: 'object',
        info: { key, size: content.length, etag: sha256Hex(content), contentType: 'application/octet-stream', metadata: {}, updatedAt: new Date().toISOString() },
        content: content.toString('base64'),
      });
    const [older, other, newer] = [Buffer.alloc(6000, 1), Buffer.alloc(3000, 2), Buffer.alloc(1000, 3)];
    const file = path.join(dir, 'v1.ndjson');
    // Written while `a` was rewritten: its old copy first, its new one at the end (the old export's order).
    await writeFile(file, [JSON.stringify({ format: 'kyozo-ram-snapshot', v: 1 }), object('a', older), object('b', other), object('a', newer), ''].join('\n'));
    const fits = 1000 + entryBytes('a') + 3000 + entryBytes('b');
    const target = new RamProvider({ maxBytes: fits });
    await target.importSnapshot(file);
    expect((await target.stat('a')).size).toBe(1000);
    expect((await target.stats()).detail?.usedBytes).toBe(fits);
  });

  it('a version made after importing one minted by a clock ahead of this one still lists as the newest', async () => {
    const source = new RamProvider({ maxBytes: 10_000 });
    const imported = await source.createVersion('doc', 'from the other host', { message: 'theirs' });
    const file = path.join(dir, 'snap.ndjson');
    await source.exportSnapshot(file);
    // The same snapshot as a host whose clock runs an hour ahead would have written it.
    const ahead = base32(Date.now() + 3_600_000, 11) + imported.versionId.slice(11);
    await writeFile(file, (await readFile(file, 'utf8')).replaceAll(imported.versionId, ahead));
    const target = new RamProvider({ maxBytes: 10_000 });
    await target.importSnapshot(file);
    const mine = await target.createVersion('doc', 'made here after', { message: 'mine' });
    expect((await target.listVersions('doc')).items.map((item) => item.versionId)).toEqual([mine.versionId, ahead]);
  });

  it('ids minted after one whose sequence is at its last value still sort after it', async () => {
    const imported = `${base32(Date.now() + 3_600_000, 11)}zzzzz${'0'.repeat(10)}`;
    mintAfter(imported);
    const next = newVersionId();
    expect(next > imported, `${next} after ${imported}`).toBe(true);
  });

  it('an id dated far past any clock (a damaged or crafted snapshot) does not make the ids minted after it sort first (session 11)', async () => {
    const before = newVersionId();
    mintAfter(`zzzzzzzzzzz${'0'.repeat(15)}`); // its time is beyond what a number holds exactly: it would wrap to 0
    const next = newVersionId();
    expect(next > before, `${next} after ${before}`).toBe(true);
    // One from a clock a month ahead is still followed: a version made after it lists as newer.
    const ahead = `${base32(Date.now() + 30 * 24 * 3_600_000, 11)}${'0'.repeat(15)}`;
    mintAfter(ahead);
    expect(newVersionId() > ahead).toBe(true);
  });

  it('readAhead: a rest that is destroyed unread takes its source with it (session 11)', async () => {
    const source = Readable.from((function* () {
      for (let i = 0; i < 100; i++) yield Buffer.alloc(1024, i);
    })(), { objectMode: false });
    const { rest } = await readAhead(source, 4096);
    rest!.destroy();
    await new Promise((resolve) => setImmediate(resolve));
    expect(source.destroyed).toBe(true);
    const whole = Readable.from([Buffer.alloc(10_000)]);
    const read = await readAhead(whole, 4096);
    let bytes = 0;
    for await (const chunk of read.rest!) bytes += (chunk as Buffer).length;
    expect(bytes).toBe(10_000);
  });

  it('stores small bodies in memory of their own, not in a shared pool chunk another key could be read through', async () => {
    const ram = new RamProvider({ maxBytes: 10_000 });
    await ram.write('secret', 'the-password');
    await ram.write('public', 'hello');
    const { body } = await ram.read('public');
    const chunks: Buffer[] = [];
    for await (const chunk of body) chunks.push(chunk as Buffer);
    expect(Buffer.from(chunks[0]!.buffer).includes('the-password')).toBe(false);
  });

  it('refuses a snapshot larger than the budget', async () => {
    const source = new RamProvider({ maxBytes: 1000 });
    await source.write('k', 'x'.repeat(500));
    const file = path.join(dir, 'snap.ndjson');
    await source.exportSnapshot(file);
    await expect(new RamProvider({ maxBytes: 100 }).importSnapshot(file)).rejects.toBeInstanceOf(StorageFullError);
  });
});
