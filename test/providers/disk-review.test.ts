/**
 * The disk provider's answers to a review of its crash safety, durability, damaged records and planted symlinks (the
 * reviewer's proofs are in .scratch/review-disk/). A test can neither cut the power nor stop the process half-way
 * through a call, so failures are injected into node:fs/promises: a spy, made visible to the provider's named imports
 * by `syncBuiltinESMExports`. A call that never settles stands for a process killed at that step.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { mkdir, mkdtemp, open, readdir, readFile, realpath, rm, symlink, truncate, utimes, writeFile } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { toApiError } from '../../src/api/errors.js';
import { versionMadeBy } from '../../src/jobs/version.js';
import type { JobRef } from '../../src/jobs/definition.js';
import { isTempName } from '../../src/providers/atomic-file.js';
import { DiskProvider } from '../../src/providers/disk.js';
import type { StorageError } from '../../src/providers/errors.js';

const sha256 = (content: string) => createHash('sha256').update(content).digest('hex');

async function readText(provider: DiskProvider, key: string, versionId?: string): Promise<string> {
  const { body } = await provider.read(key, versionId ? { versionId } : undefined);
  return Buffer.concat(await body.toArray()).toString('utf8');
}

/** The ids `listVersions` gives for `key`, newest first. */
async function listedIds(provider: DiskProvider, key: string): Promise<string[]> {
  return (await provider.listVersions(key)).items.map((version) => version.versionId);
}

/** Every file below `dir`, relative to it, sorted. */
async function filesBelow(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((entry) => entry.isFile())
    .map((entry) => path.relative(dir, path.join(entry.parentPath, entry.name)))
    .sort();
}

/** The error `promise` rejects with. */
function failure(promise: Promise<unknown>): Promise<StorageError> {
  return promise.then(
    () => {
      throw new Error('expected a failure');
    },
    (error: unknown) => error as StorageError,
  );
}

type Intercepted = 'link' | 'open' | 'rename';

/**
 * Replaces `fs.promises[name]`, for the provider and this file alike, with what `fake` makes of the real one, for
 * the rest of the test (or until `restoreFs`).
 */
function intercept<K extends Intercepted>(name: K, fake: (real: (typeof fs.promises)[K]) => (typeof fs.promises)[K]): void {
  const real = fs.promises[name];
  vi.spyOn(fs.promises, name).mockImplementation(fake(real) as never);
  syncBuiltinESMExports();
}

function restoreFs(): void {
  vi.restoreAllMocks();
  syncBuiltinESMExports();
}

/** The directories fsynced from now on, in order (files are flushed with datasync, directories with sync). */
function recordDirectorySyncs(): string[] {
  const synced: string[] = [];
  intercept('open', (real) => async (file, flags, mode) => {
    const handle = await real(file, flags, mode);
    const sync = handle.sync.bind(handle);
    handle.sync = () => {
      synced.push(String(file));
      return sync();
    };
    return handle;
  });
  return synced;
}

describe('disk provider, after review', () => {
  let root: string;
  let provider: DiskProvider;

  beforeEach(async () => {
    root = await realpath(await mkdtemp(path.join(os.tmpdir(), 'kyozo-disk-review-')));
    provider = new DiskProvider({ root, fsync: true });
  });

  afterEach(async () => {
    restoreFs();
    await rm(root, { recursive: true, force: true });
  });

  it('a write refused at its commit (expectedEtag, the fence) leaves none of the directories it made (session 9)', async () => {
    await expect(provider.write('w/deep/key', 'hello', { expectedEtag: '0'.repeat(64) })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    const lost = new Error('lost lock');
    await expect(provider.write('f/deep/key', 'hello', { fence: async () => Promise.reject(lost) })).rejects.toBe(lost);
    expect(await readdir(path.join(root, 'objects'))).toEqual([]);
  });

  describe('a version becomes current before it is listed', () => {
    const job: JobRef = { id: '1', name: 'version', timestamp: Date.now(), attemptsStarted: 2 };

    it('a version whose link into objects/ fails is neither listed nor current, so the job retry makes it again', async () => {
      const first = await provider.createVersion('doc', 'content one', { message: 'one' });
      // Where the reviewer's tmpfs ran out of inodes (enospc-version-link.ts): the link into objects/.
      intercept('link', (real) => async (source, target) => {
        if (!String(target).includes(`${path.sep}objects${path.sep}`)) return real(source, target);
        throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
      });
      await expect(provider.createVersion('doc', 'content two', { message: 'two' })).rejects.toMatchObject({ code: 'STORAGE_FULL' });

      expect(await listedIds(provider, 'doc')).toEqual([first.versionId]);
      expect(await readText(provider, 'doc')).toBe('content one');
      expect(await versionMadeBy(job, provider, 'doc', { etag: sha256('content two'), messages: ['two'] })).toBeUndefined();
      const records = [path.join('objects', 'doc~'), path.join('versions', 'doc~', first.versionId)];
      expect(await filesBelow(root)).toEqual(records);

      restoreFs();
      const second = await provider.createVersion('doc', 'content two', { message: 'two' });
      expect(await listedIds(provider, 'doc')).toEqual([second.versionId, first.versionId]);
      expect(await readText(provider, 'doc')).toBe('content two');
    });

    it('a version stopped between becoming current and being listed is current, unlisted, and leaves only temp files', async () => {
      const first = await provider.createVersion('doc', 'content one', { message: 'one' });
      let stopped!: () => void;
      const reached = new Promise<void>((resolve) => (stopped = resolve));
      intercept('rename', (real) => (from, to) => {
        if (!String(to).includes(`${path.sep}versions${path.sep}`)) return real(from, to);
        stopped();
        return new Promise<void>(() => {}); // the process is killed here
      });
      void provider.createVersion('doc', 'content two', { message: 'two' });
      await reached;

      // What the next process finds.
      const after = new DiskProvider({ root, fsync: true });
      expect(await readText(after, 'doc')).toBe('content two');
      expect(await listedIds(after, 'doc')).toEqual([first.versionId]);
      expect(await versionMadeBy(job, after, 'doc', { etag: sha256('content two'), messages: ['two'] })).toBeUndefined();
      const records = [path.join('objects', 'doc~'), path.join('versions', 'doc~', first.versionId)];
      const leftovers = (await filesBelow(root)).filter((file) => !records.includes(file));
      expect(leftovers.length).toBeGreaterThan(0);
      expect(leftovers.filter((file) => !isTempName(path.basename(file)))).toEqual([]);

      // The sweep removes them; the current object is a name of its own for the content.
      const hourAgo = new Date(Date.now() - 3_600_000);
      for (const file of leftovers) await utimes(path.join(root, file), hourAgo, hourAgo);
      expect(await after.removeLeftovers(60_000)).toBe(leftovers.length);
      expect(await filesBelow(root)).toEqual(records);
      expect(await readText(after, 'doc')).toBe('content two');
    });
  });

  describe('with DISK_FSYNC, a delete survives a power cut', () => {
    it('delete syncs the directory it unlinked the object from', async () => {
      await provider.write('a/kept', 'kept');
      await provider.write('a/gone', 'gone');
      const synced = recordDirectorySyncs();
      await provider.delete('a/gone');
      expect(synced).toEqual([path.join(root, 'objects', 'a')]);
    });

    it('delete syncs the parent of the topmost directory it pruned', async () => {
      await provider.write('a/b/c', 'content');
      const synced = recordDirectorySyncs();
      await provider.delete('a/b/c');
      expect(synced).toEqual([path.join(root, 'objects')]);
    });

    it('delete with allVersions syncs where the object and the versions directory were removed', async () => {
      await provider.createVersion('d/h', 'one', { message: '1' });
      await provider.createVersion('d/h', 'two', { message: '2' });
      await provider.write('d/other', 'keeps d/ in objects/');
      const synced = recordDirectorySyncs();
      await provider.delete('d/h', { allVersions: true });
      expect(synced).toEqual([path.join(root, 'objects', 'd'), path.join(root, 'versions')]);
    });

    it('deleteVersion syncs the versions directory, or its parent once it is pruned', async () => {
      const one = await provider.createVersion('h', 'one', { message: '1' });
      const two = await provider.createVersion('h', 'two', { message: '2' });
      const synced = recordDirectorySyncs();
      await provider.deleteVersion('h', one.versionId);
      expect(synced).toEqual([path.join(root, 'versions', 'h~')]);
      await provider.deleteVersion('h', two.versionId);
      expect(synced).toEqual([path.join(root, 'versions', 'h~'), path.join(root, 'versions')]);
    });

    it('a write into new directories syncs the parent of each directory it made', async () => {
      await provider.write('seed', 'makes the tree');
      const synced = recordDirectorySyncs();
      await provider.write('x/y/z', 'content');
      const objects = path.join(root, 'objects');
      expect([...synced].sort()).toEqual([objects, path.join(objects, 'x'), path.join(objects, 'x', 'y')]);
    });

    it('syncs nothing without DISK_FSYNC', async () => {
      const unsynced = new DiskProvider({ root, fsync: false });
      await unsynced.write('a/b', 'content');
      await unsynced.createVersion('h', 'one', { message: '1' });
      const synced = recordDirectorySyncs();
      await unsynced.delete('a/b');
      await unsynced.delete('h', { allVersions: true });
      expect(synced).toEqual([]);
    });
  });

  describe('a damaged record', () => {
    beforeEach(async () => {
      await provider.write('cut', 'some content');
      // What a crash with DISK_FSYNC=false can leave: the rename survived, the data did not.
      await truncate(path.join(root, 'objects', 'cut~'), 5);
    });

    it('is DATA_CORRUPTED (500, not retried), named by its key and never by its path', async () => {
      for (const error of [await failure(provider.read('cut')), await failure(provider.stat('cut'))]) {
        expect(error).toMatchObject({ code: 'DATA_CORRUPTED', status: 500, retryable: false });
        expect(error.message).toContain('"cut"');
        expect(error.message).not.toContain(root);
        expect(toApiError(error)).toMatchObject({ code: 'DATA_CORRUPTED', status: 500, headers: {} });
      }
    });

    it('as a version, is DATA_CORRUPTED to reads and restores of that version', async () => {
      const version = await provider.createVersion('h', 'version one', { message: 'one' });
      await provider.write('h', 'later');
      await truncate(path.join(root, 'versions', 'h~', version.versionId), 3);
      const reads = [provider.read('h', { versionId: version.versionId }), provider.restoreVersion('h', version.versionId)];
      for (const error of await Promise.all(reads.map(failure))) {
        expect(error).toMatchObject({ code: 'DATA_CORRUPTED', retryable: false });
        expect(error.message).toContain(`version "${version.versionId}" of "h"`);
        expect(error.message).not.toContain(root);
      }
      expect(await readText(provider, 'h')).toBe('later');
    });

    it('as a version too large to be checked while read, still fails its restore and changes nothing', async () => {
      const content = Buffer.alloc(100 * 1024, 'a');
      const version = await provider.createVersion('big', content, { message: 'one' });
      await provider.write('big', 'later');
      const file = path.join(root, 'versions', 'big~', version.versionId);
      const handle = await open(file, 'r+');
      await handle.write(Buffer.from('b'), 0, 1, 500); // one byte of the content rots, the size stays
      await handle.close();
      const error = await failure(provider.restoreVersion('big', version.versionId));
      expect(error).toMatchObject({ code: 'DATA_CORRUPTED', retryable: false });
      expect(error.message).toContain(`version "${version.versionId}" of "big"`);
      expect(await readText(provider, 'big')).toBe('later');
      expect((await provider.listVersions('big')).items.map((item) => item.versionId)).toEqual([version.versionId]);
      expect((await readdir(path.join(root, 'versions', 'big~'))).filter((name) => name.startsWith('.tmp-'))).toEqual([]);
    });

    it('exists: a create-only write or version over it fails its precondition', async () => {
      const refused = { code: 'PRECONDITION_FAILED' };
      await expect(provider.write('cut', 'new', { ifNoneMatch: '*' })).rejects.toMatchObject(refused);
      await expect(provider.createVersion('cut', 'new', { message: 'm', ifNoneMatch: '*' })).rejects.toMatchObject(refused);
      await expect(provider.read('cut')).rejects.toMatchObject({ code: 'DATA_CORRUPTED' });
    });

    it('matches ifMatch * and no etag: a write with ifMatch * replaces it', async () => {
      const ifMatch = sha256('some content');
      await expect(provider.write('cut', 'new', { ifMatch })).rejects.toMatchObject({ code: 'PRECONDITION_FAILED' });
      await provider.write('cut', 'repaired', { ifMatch: '*' });
      expect(await readText(provider, 'cut')).toBe('repaired');
    });

    it('is replaced by an unconditional write or version', async () => {
      await provider.write('cut', 'repaired');
      expect(await readText(provider, 'cut')).toBe('repaired');
      await truncate(path.join(root, 'objects', 'cut~'), 5);
      await provider.createVersion('cut', 'repaired as a version', { message: 'repair' });
      expect(await readText(provider, 'cut')).toBe('repaired as a version');
    });

    it('whose content no longer matches its etag (read whole, up to 64 KiB) is DATA_CORRUPTED, not served', async () => {
      await provider.write('rot', 'hello world, this is the content');
      const file = await open(path.join(root, 'objects', 'rot~'), 'r+');
      await file.write(Buffer.from('m'), 0, 1, 3); // one byte changed at rest
      await file.close();
      await expect(provider.read('rot')).rejects.toMatchObject({ code: 'DATA_CORRUPTED' });
      await expect(provider.read('rot', { range: [20, 25] })).rejects.toMatchObject({ code: 'DATA_CORRUPTED' });
    });
  });

  describe('symlinks planted in the store', () => {
    let outside: string;

    beforeEach(async () => {
      outside = await mkdtemp(path.join(os.tmpdir(), 'kyozo-disk-review-outside-'));
    });

    afterEach(async () => {
      await rm(outside, { recursive: true, force: true });
    });

    it.each(['objects', 'versions'])('%s/ replaced by a symlink fails stats and health, in a running and a new provider', async (top) => {
      await provider.write('mine', 'content');
      const victim = new DiskProvider({ root: outside, fsync: false });
      await victim.write('secret', 'not this store’s');
      await rm(path.join(root, top), { recursive: true });
      await symlink(path.join(outside, top), path.join(root, top));
      for (const store of [provider, new DiskProvider({ root, fsync: false })]) {
        await expect(store.stats()).rejects.toMatchObject({ code: 'PERMISSION_DENIED' });
        expect(await store.health()).toMatchObject({ status: 'down' });
      }
      await expect(new DiskProvider({ root, fsync: false }).stat('secret')).rejects.toMatchObject({ code: 'PERMISSION_DENIED' });
    });

    it('a symlink among a key’s versions is not listed or counted; deleteVersion removes the link, not its target', async () => {
      const own = await provider.createVersion('own', 'own version', { message: 'm' });
      const target = path.join(outside, 'record');
      await writeFile(target, 'outside the store');
      const planted = own.versionId.slice(0, -1) + (own.versionId.endsWith('z') ? 'y' : 'z');
      await symlink(target, path.join(root, 'versions', 'own~', planted));
      await mkdir(path.join(root, 'versions', 'own~', 'not-a-version'));

      expect(await listedIds(provider, 'own')).toEqual([own.versionId]);
      expect((await provider.stats()).versions).toBe(1);
      await provider.deleteVersion('own', planted);
      expect(await readdir(path.join(root, 'versions', 'own~'))).not.toContain(planted);
      expect(await readFile(target, 'utf8')).toBe('outside the store');
      expect(await readText(provider, 'own', own.versionId)).toBe('own version');
    });
  });
});
