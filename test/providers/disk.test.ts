/**
 * What only the disk provider promises, beyond the contract suite: crash safety, never leaving its root, the
 * on-disk layout, and streaming without buffering.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, truncate, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DiskProvider } from '../../src/providers/disk.js';
import { DataCorruptedError, InvalidKeyError, PreconditionFailedError } from '../../src/providers/errors.js';
import { compareKeys } from '../../src/providers/keys.js';
import { allPages } from '../support/paging.js';

const sha256 = (content: Uint8Array | string) => createHash('sha256').update(content).digest('hex');

async function readText(provider: DiskProvider, key: string, versionId?: string): Promise<string> {
  const { body } = await provider.read(key, versionId ? { versionId } : undefined);
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

/** Every file below `dir`, relative to it. */
async function filesBelow(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((entry) => entry.isFile()).map((entry) => path.relative(dir, path.join(entry.parentPath, entry.name)));
}

/** Every entry (file or directory) below `dir`, relative to it. */
async function entriesBelow(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true })).map(String).sort();
}

/** A body that sends a few bytes, then fails with `error`. */
function failingBody(error: Error): Readable {
  return Readable.from(
    (async function* () {
      yield Buffer.from('part of a body');
      throw error;
    })(),
  );
}

/** `promise`, or a rejection once `ms` have passed without it settling. */
function within<T>(ms: number, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still waiting after ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** Waits until `dir` holds a temp file: a write into it has begun staging its body. */
async function staging(dir: string): Promise<void> {
  for (let tries = 0; tries < 400; tries++) {
    const names = await readdir(dir).catch(() => []);
    if (names.some((name) => name.startsWith('.tmp-'))) return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error(`no write began staging in ${dir}`);
}

describe('disk provider', () => {
  let root: string;
  let outside: string;
  let provider: DiskProvider;

  beforeEach(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'kyozo-disk-'));
    outside = await mkdtemp(path.join(os.tmpdir(), 'kyozo-disk-outside-'));
    provider = new DiskProvider({ root, fsync: true });
  });

  afterEach(async () => {
    await provider.close();
    await rm(root, { recursive: true, force: true });
    await rm(outside, { recursive: true, force: true });
  });

  it('a write whose path a stray file blocks fails for good (not retried as an outage)', async () => {
    await provider.write('seed', 'x');
    await writeFile(path.join(root, 'objects', 'x'), 'not the store\'s'); // no `~`: the store never makes this
    const refused = await provider.write('x/y', 'v').catch((error: unknown) => error);
    expect(refused).toMatchObject({ code: 'PERMISSION_DENIED', retryable: false });
  });

  it('a write killed before its rename leaves the old content, its etag, and no temp file in list', async () => {
    const old = await provider.write('big', 'old content');
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, 'fixtures/disk-endless-writer.ts'), root, 'big'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (data: Buffer) => data.toString().includes('writing') && resolve());
      child.on('exit', (code) => reject(new Error(`writer exited with ${code} before writing`)));
    });
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');

    // The interrupted write really had started: its temp file is there, next to the object.
    const leftovers = (await readdir(path.join(root, 'objects'))).filter((name) => name.startsWith('.tmp-'));
    expect(leftovers).toHaveLength(1);
    expect((await stat(path.join(root, 'objects', leftovers[0]!))).size).toBeGreaterThan(0);

    expect(await readText(provider, 'big')).toBe('old content');
    expect((await provider.stat('big')).etag).toBe(old.etag);
    expect((await provider.list()).items.map((item) => item.key)).toEqual(['big']);
    expect((await provider.stats()).objects).toBe(1);
    await provider.write('big', 'after the crash');
    expect(await readText(provider, 'big')).toBe('after the crash');
  });

  it('a version made after one from a clock an hour ahead still lists as the newest and is current', async () => {
    await promisify(execFile)(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, 'fixtures/disk-writer.ts'), 'version', root, 'doc'], {
      env: { ...process.env, CLOCK_AHEAD_MS: String(60 * 60_000) },
    });
    const ahead = (await provider.listVersions('doc')).items[0]!;
    const made = await provider.createVersion('doc', 'made now', { message: 'after the clock was corrected' });
    expect(made.versionId > ahead.versionId).toBe(true);
    expect((await provider.listVersions('doc')).items.map((version) => version.versionId)).toEqual([made.versionId, ahead.versionId]);
    expect(await readText(provider, 'doc')).toBe('made now');
  });

  describe('never leaves its root', () => {
    let elsewhere: DiskProvider;

    beforeEach(async () => {
      elsewhere = new DiskProvider({ root: outside, fsync: false });
      await elsewhere.write('secret', 'outside the store');
      await provider.write('inside', 'x');
    });

    it('refuses reads, writes and deletes through a directory symlink that points outside', async () => {
      await symlink(path.join(outside, 'objects'), path.join(root, 'objects', 'evil'));
      await symlink(path.join(outside, 'versions'), path.join(root, 'versions', 'evil'));
      const before = await filesBelow(outside);

      await expect(provider.read('evil/secret')).rejects.toBeInstanceOf(InvalidKeyError);
      await expect(provider.stat('evil/secret')).rejects.toBeInstanceOf(InvalidKeyError);
      await expect(provider.write('evil/planted', 'x')).rejects.toBeInstanceOf(InvalidKeyError);
      await expect(provider.write('evil/deeper/planted', 'x')).rejects.toBeInstanceOf(InvalidKeyError);
      await expect(provider.write('evil/secret', 'overwrite')).rejects.toBeInstanceOf(InvalidKeyError);
      await expect(provider.createVersion('evil/v', 'x', { message: 'm' })).rejects.toBeInstanceOf(InvalidKeyError);
      await expect(provider.delete('evil/secret', { allVersions: true })).rejects.toBeInstanceOf(InvalidKeyError);
      await expect(provider.list({ prefix: 'evil/' })).rejects.toBeInstanceOf(InvalidKeyError);
      expect((await provider.list()).items.map((item) => item.key)).toEqual(['inside']);

      expect(await filesBelow(outside)).toEqual(before);
      expect(await readText(elsewhere, 'secret')).toBe('outside the store');
    });

    it('a version refused for a symlinked object directory removes nothing outside and leaves no directory', async () => {
      await symlink(path.join(outside, 'objects'), path.join(root, 'objects', 'evil'));
      await mkdir(path.join(outside, 'objects', 'empty'));
      await expect(provider.createVersion('evil/empty/v', 'x', { message: 'm' })).rejects.toBeInstanceOf(InvalidKeyError);
      expect((await stat(path.join(outside, 'objects', 'empty'))).isDirectory()).toBe(true);
      expect(await entriesBelow(path.join(root, 'versions'))).toEqual([]);
    });

    it('refuses reads of an object file that is a symlink pointing outside; a write replaces the link, never follows it', async () => {
      const link = path.join(root, 'objects', 'link~');
      await symlink(path.join(outside, 'objects', 'secret~'), link);
      await expect(provider.read('link')).rejects.toBeInstanceOf(InvalidKeyError);
      await expect(provider.stat('link')).rejects.toBeInstanceOf(InvalidKeyError);
      expect((await provider.list()).items.map((item) => item.key)).toEqual(['inside']);
      await expect(provider.write('link', 'overwrite', { ifMatch: 'a'.repeat(64) })).rejects.toBeInstanceOf(InvalidKeyError);

      await provider.write('link', 'overwrite');
      expect(await readText(elsewhere, 'secret')).toBe('outside the store');
      expect((await lstat(link)).isSymbolicLink()).toBe(false);
      expect(await readText(provider, 'link')).toBe('overwrite');
    });
  });

  describe('layout', () => {
    it('keeps a and a/b side by side as a~ and a/b~, versions in versions/<key path>/<versionId>', async () => {
      await provider.write('a', 'file a');
      const version = await provider.createVersion('a/b', 'file a/b', { message: 'first' });
      expect(await readText(provider, 'a')).toBe('file a');
      expect(await readText(provider, 'a/b')).toBe('file a/b');
      expect((await filesBelow(root)).sort()).toEqual(['objects/a/b~', 'objects/a~', `versions/a/b~/${version.versionId}`]);
    });

    it('escapes only %, ~ and + in file names', async () => {
      await provider.write('50%~+ off/ünïcode name', 'x');
      expect(await filesBelow(path.join(root, 'objects'))).toEqual(['50%25%7E%2B off/ünïcode name~']);
      expect((await provider.list()).items.map((item) => item.key)).toEqual(['50%~+ off/ünïcode name']);
    });

    it('writes each record as content, JSON trailer, its length and KYZ1', async () => {
      await provider.write('doc', 'hello', { contentType: 'text/plain', metadata: { owner: 'ada' } });
      const file = await readFile(path.join(root, 'objects', 'doc~'));
      const jsonLength = file.readUInt32BE(file.length - 8);
      expect(file.subarray(file.length - 4).toString()).toBe('KYZ1');
      expect(file.subarray(0, 5).toString()).toBe('hello');
      expect(JSON.parse(file.subarray(5, 5 + jsonLength).toString())).toMatchObject({
        v: 1,
        size: 5,
        etag: sha256('hello'),
        contentType: 'text/plain',
        metadata: { owner: 'ada' },
      });
      expect(5 + jsonLength + 8).toBe(file.length);
    });

    it('round-trips 1,024-byte single-segment keys, split into names of at most 201 bytes', async () => {
      const plain = 'k'.repeat(1024);
      const escaped = '%'.repeat(1024); // 3,072 bytes once escaped
      const dots = `${'d'.repeat(200)}..`; // a last piece ".." must not become a directory named ".."
      for (const key of [plain, escaped, dots, `${dots}/below`]) await provider.write(key, key.slice(0, 10));
      for (const key of [plain, escaped, dots, `${dots}/below`]) expect(await readText(provider, key)).toBe(key.slice(0, 10));
      const names = (await filesBelow(path.join(root, 'objects'))).flatMap((file) => file.split('/'));
      expect(Math.max(...names.map((name) => Buffer.byteLength(name)))).toBeLessThanOrEqual(201);
      expect(names).not.toContain('..');
      expect((await provider.list()).items.map((item) => item.key)).toEqual([plain, escaped, dots, `${dots}/below`].sort(compareKeys));
    });

    it('lists long segments in byte order even where their keys interleave with a sibling directory', async () => {
      const p = 'p'.repeat(200);
      // `${p}-x` and `${p}a` are stored under the continuation directory `${p}+`, `${p}/y` under the directory `${p}`.
      const keys = [`${p}a`, `${p}/y`, `${p}-x`, `${p}`, 'q', `${'p'.repeat(199)}€x`];
      for (const key of keys) await provider.write(key, 'x');
      const expected = [...keys].sort(compareKeys);
      expect((await provider.list()).items.map((item) => item.key)).toEqual(expected);
      const paged = (await allPages((cursor) => provider.list({ limit: 1, cursor }))).flat().map((item) => item.key);
      expect(paged).toEqual(expected);
      expect((await provider.list({ prefix: `${p}/` })).items.map((item) => item.key)).toEqual([`${p}/y`]);
    });

    it('delete removes emptied directories and, with allVersions, the versions directory', async () => {
      await provider.createVersion('deep/er/key', 'x', { message: 'v' });
      await provider.write('deep/other', 'y');
      await provider.delete('deep/er/key');
      expect(await exists(path.join(root, 'objects', 'deep', 'er'))).toBe(false);
      expect(await exists(path.join(root, 'objects', 'deep', 'other~'))).toBe(true);
      expect(await exists(path.join(root, 'versions', 'deep', 'er', 'key~'))).toBe(true);
      await provider.delete('deep/er/key', { allVersions: true });
      expect(await readdir(path.join(root, 'versions'))).toEqual([]);
    });

    it('createVersion stores the content once: the current object is the version record itself', async () => {
      const version = await provider.createVersion('shared', 'same bytes', { message: 'v' });
      const object = await stat(path.join(root, 'objects', 'shared~'));
      const record = await stat(path.join(root, 'versions', 'shared~', version.versionId));
      expect(object.ino).toBe(record.ino);
      await provider.write('shared', 'replaced');
      expect(await readText(provider, 'shared', version.versionId)).toBe('same bytes');
    });
  });

  it('removeLeftovers removes temp files older than the threshold and nothing else', async () => {
    await provider.write('docs/kept', 'content');
    await provider.createVersion('docs/versioned', 'v1', { message: 'one' });
    // Objects whose keys look like temp files: the sweep must tell them apart from real ones.
    const lookalikes = ['.tmp-notes', 'docs/.tmp-0123456789abcdef', 'docs/.tmp-health-abcdef'];
    for (const key of lookalikes) await provider.write(key, `user data ${key}`);
    const dir = path.join(root, 'objects', 'docs');
    const stale = path.join(dir, '.tmp-0a1b2c3d4e5f6a7b');
    const staleVersion = path.join(root, 'versions', '.tmp-ffeeddccbbaa9988');
    const fresh = path.join(dir, '.tmp-1122334455667788');
    for (const file of [stale, staleVersion, fresh]) await writeFile(file, 'half a write');
    const hourAgo = new Date(Date.now() - 3600_000);
    for (const file of [stale, staleVersion, path.join(root, 'objects', '.tmp-notes~'), path.join(dir, '.tmp-0123456789abcdef~'), path.join(dir, '.tmp-health-abcdef~')]) {
      await utimes(file, hourAgo, hourAgo);
    }

    expect(await provider.removeLeftovers(60_000)).toBe(2);
    for (const key of lookalikes) expect(await readText(provider, key)).toBe(`user data ${key}`);
    await expect(stat(stale)).rejects.toThrow();
    await expect(stat(staleVersion)).rejects.toThrow();
    expect((await stat(fresh)).isFile()).toBe(true);
    expect(await (await readFile(path.join(dir, 'kept~'))).subarray(0, 7).toString()).toBe('content');
    expect((await provider.listVersions('docs/versioned')).items).toHaveLength(1);
  });

  describe('a damaged record', () => {
    beforeEach(async () => {
      for (const key of ['a', 'b', 'c']) await provider.write(key, key);
      // What a crash with DISK_FSYNC=false can leave: the rename survived, the data did not.
      await truncate(path.join(root, 'objects', 'b~'), 0);
    });

    it('is left out of list pages instead of failing them', async () => {
      expect((await provider.list()).items.map((item) => item.key)).toEqual(['a', 'c']);
      const paged = (await allPages((cursor) => provider.list({ limit: 1, cursor }))).flat().map((item) => item.key);
      expect(paged).toEqual(['a', 'c']);
    });

    it('is left out of stats, and counted in their detail', async () => {
      const stats = await provider.stats();
      expect(stats).toMatchObject({ objects: 2, bytes: 2 });
      expect(stats.detail).toMatchObject({ damagedObjects: 1 });
    });

    it('is left out of a page of versions instead of failing it', async () => {
      const older = await provider.createVersion('h', 'one', { message: '1' });
      const newer = await provider.createVersion('h', 'two', { message: '2' });
      await truncate(path.join(root, 'versions', 'h~', older.versionId), 3);
      expect((await provider.listVersions('h')).items.map((version) => version.versionId)).toEqual([newer.versionId]);
    });

    it('still fails read and stat of its key', async () => {
      await expect(provider.read('b')).rejects.toBeInstanceOf(DataCorruptedError);
      await expect(provider.stat('b')).rejects.toBeInstanceOf(DataCorruptedError);
    });
  });

  describe('a body that fails', () => {
    it('rejects with its own error, unmapped, even one carrying an errno', async () => {
      for (const code of ['ECONNRESET', 'EACCES']) {
        const error = Object.assign(new Error('the sender went away'), { code });
        await expect(provider.write('k', failingBody(error))).rejects.toBe(error);
        await expect(provider.createVersion('k', failingBody(error), { message: 'm' })).rejects.toBe(error);
      }
    });

    it('leaves no directory or temp file behind', async () => {
      const error = new Error('the sender went away');
      await expect(provider.write('new/deep/key', failingBody(error))).rejects.toBe(error);
      await expect(provider.createVersion('other/deep/key', failingBody(error), { message: 'm' })).rejects.toBe(error);
      expect(await entriesBelow(root)).toEqual(['objects', 'versions']);
    });
  });

  it('a write or version refused by ifMatch makes no directories', async () => {
    await expect(provider.write('new/deep/er/key', 'x', { ifMatch: '*' })).rejects.toBeInstanceOf(PreconditionFailedError);
    await expect(provider.createVersion('v/deep/key', 'x', { message: 'm', ifMatch: 'a'.repeat(64) })).rejects.toBeInstanceOf(
      PreconditionFailedError,
    );
    expect(await entriesBelow(root)).toEqual(['objects', 'versions']);
  });

  describe('a body still arriving', () => {
    let slow: PassThrough;

    beforeEach(() => {
      slow = new PassThrough();
      slow.write('first bytes, ');
    });

    afterEach(() => {
      slow.destroy();
    });

    it('holds up no delete or write of its key; it lands after them', async () => {
      await provider.write('k', 'old');
      const upload = provider.write('k', slow);
      await staging(path.join(root, 'objects'));
      await within(1_000, provider.delete('k'));
      await within(1_000, provider.write('k', 'meanwhile'));
      expect(await readText(provider, 'k')).toBe('meanwhile');
      slow.end('the rest');
      await upload;
      expect(await readText(provider, 'k')).toBe('first bytes, the rest');
    });

    it('is checked against ifMatch again when it lands', async () => {
      const first = await provider.write('k', 'old');
      const upload = provider.write('k', slow, { ifMatch: first.etag });
      await staging(path.join(root, 'objects'));
      await within(1_000, provider.write('k', 'meanwhile'));
      slow.end('the rest');
      await expect(upload).rejects.toBeInstanceOf(PreconditionFailedError);
      expect(await readText(provider, 'k')).toBe('meanwhile');
      expect(await entriesBelow(path.join(root, 'objects'))).toEqual(['k~']);
    });

    it('as a version, survives a delete of every version of its key made meanwhile', async () => {
      await provider.createVersion('h', 'one', { message: '1' });
      const upload = provider.createVersion('h', slow, { message: '2' });
      await staging(path.join(root, 'versions', 'h~'));
      await within(1_000, provider.delete('h', { allVersions: true }));
      slow.end('the rest');
      const version = await upload;
      expect((await provider.listVersions('h')).items.map((item) => item.versionId)).toEqual([version.versionId]);
      expect(await readText(provider, 'h')).toBe('first bytes, the rest');
    });

    it('as a version older than one made meanwhile, stays a version and does not become current', async () => {
      const upload = provider.createVersion('h', slow, { message: 'older' });
      await staging(path.join(root, 'versions', 'h~'));
      const newer = await within(1_000, provider.createVersion('h', 'newer', { message: 'newer' }));
      slow.end('the rest');
      const older = await upload;
      expect(older.versionId < newer.versionId).toBe(true);
      expect((await provider.listVersions('h')).items.map((item) => item.versionId)).toEqual([newer.versionId, older.versionId]);
      expect(await readText(provider, 'h')).toBe('newer');
      expect(await readText(provider, 'h', older.versionId)).toBe('first bytes, the rest');
    });
  });

  describe('concurrent mutations of one key', () => {
    it('let exactly one of several writes with the same ifMatch through', async () => {
      const first = await provider.write('cas/object', 'v0');
      const attempts = await Promise.allSettled(
        Array.from({ length: 8 }, (_, i) => provider.write('cas/object', `from ${i}`, { ifMatch: first.etag })),
      );
      const won = attempts.flatMap((attempt, i) => (attempt.status === 'fulfilled' ? [i] : []));
      expect(won).toHaveLength(1);
      for (const attempt of attempts) {
        if (attempt.status === 'rejected') expect(attempt.reason).toBeInstanceOf(PreconditionFailedError);
      }
      expect(await readText(provider, 'cas/object')).toBe(`from ${won[0]}`);
    });

    it('let exactly one of several versions with the same ifMatch through', async () => {
      const first = await provider.write('cas/versioned', 'v0');
      const attempts = await Promise.allSettled(
        Array.from({ length: 8 }, (_, i) => provider.createVersion('cas/versioned', `version ${i}`, { message: `${i}`, ifMatch: first.etag })),
      );
      expect(attempts.filter((attempt) => attempt.status === 'fulfilled')).toHaveLength(1);
      expect((await provider.listVersions('cas/versioned')).items).toHaveLength(1);
    });
  });

  it('removeLeftovers and stats run while writes, versions and deletes go on', async () => {
    const cleaner = new DiskProvider({ root, fsync: true });
    const until = Date.now() + 1_500;
    let round = 0;
    const work = async () => {
      while (Date.now() < until) {
        const i = round++;
        await provider.write(`busy/k${i % 20}`, 'x');
        if (i % 3 === 0) await provider.createVersion(`history/a${i % 7}`, 'y', { message: 'm' });
        if (i % 5 === 0) await provider.delete(`history/a${(i + 3) % 7}`, { allVersions: true });
      }
    };
    const failures: string[] = [];
    let sweeps = 0;
    const sweep = async () => {
      while (Date.now() < until) {
        // An hour's threshold: no writer's temp file is old enough to go, but every one is looked at.
        for (const outcome of await Promise.allSettled([cleaner.removeLeftovers(3_600_000), cleaner.stats()])) {
          if (outcome.status === 'rejected') failures.push(String(outcome.reason));
        }
        sweeps++;
      }
    };
    await Promise.all([work(), work(), sweep()]);
    expect(sweeps).toBeGreaterThan(5);
    expect(failures).toEqual([]);
  });

  it('streams a 200 MiB write and read with process RSS growing by less than 100 MiB', async () => {
    const size = 200 * 1024 * 1024;
    const block = randomBytes(1024 * 1024);
    const stream = (bytes = size) =>
      Readable.from(
        (function* () {
          for (let sent = 0; sent < bytes; sent += block.length) yield block;
        })(),
      );
    const hash = createHash('sha256');
    for (let sent = 0; sent < size; sent += block.length) hash.update(block);
    const etag = hash.digest('hex');
    await provider.write('warm-up', stream(16 * 1024 * 1024)); // module and JIT warm-up, outside the measurement
    const rssBefore = process.memoryUsage().rss;

    const info = await provider.write('big', stream());
    const readHash = createHash('sha256');
    for await (const chunk of (await provider.read('big')).body) readHash.update(chunk as Buffer);

    const growth = process.memoryUsage().rss - rssBefore;
    expect(info).toMatchObject({ size, etag });
    expect(readHash.digest('hex')).toBe(etag);
    expect(growth).toBeLessThan(100 * 1024 * 1024);
  });
});
