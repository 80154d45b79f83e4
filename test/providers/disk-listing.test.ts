/**
 * The disk provider holds sorted directory listings between calls (disk-directory-cache.ts), checked by each
 * directory's mtime. These tests pin that a held listing never hides what another process did. A second
 * DiskProvider on the same root stands for another process (it shares nothing with the first); the first test
 * uses a real one.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, utimes } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DiskProvider } from '../../src/providers/disk.js';
import { compareKeys } from '../../src/providers/keys.js';
import type { ListOptions } from '../../src/providers/types.js';
import { allPages } from '../support/paging.js';

const run = promisify(execFile);

/** Runs `action` on `keys` in a child process with its own DiskProvider on `root`. */
async function inAnotherProcess(root: string, action: 'write' | 'delete', ...keys: string[]): Promise<void> {
  await run(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, 'fixtures/disk-writer.ts'), action, root, ...keys]);
}

/** Sets the mtime of `dirs` to `when`, the same value each time for the same `when`. */
async function stamp(when: Date, ...dirs: string[]): Promise<void> {
  for (const dir of dirs) await utimes(dir, when, when);
}

describe('disk listings held between calls', () => {
  let root: string;
  let web: DiskProvider;
  let worker: DiskProvider;
  /** Long enough ago that a read now is held for later calls. */
  const quiet = new Date(Date.now() - 60_000);

  const keys = async (options?: ListOptions) => (await web.list(options)).items.map((item) => item.key);
  const versionIds = async (key: string) => (await web.listVersions(key)).items.map((version) => version.versionId);
  const objects = (...segments: string[]) => path.join(root, 'objects', ...segments);

  beforeEach(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'kyozo-disk-listing-'));
    web = new DiskProvider({ root, fsync: false });
    worker = new DiskProvider({ root, fsync: false });
  });

  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('a page shows what another process wrote or deleted after the listing was held', async () => {
    await worker.write('d/a', 'a');
    await worker.write('d/c', 'c');
    await stamp(quiet, objects('d'));
    expect(await keys({ prefix: 'd/' })).toEqual(['d/a', 'd/c']);

    await inAnotherProcess(root, 'write', 'd/b');
    expect(await keys({ prefix: 'd/' })).toEqual(['d/a', 'd/b', 'd/c']);

    await stamp(quiet, objects('d'));
    expect(await keys({ prefix: 'd/', limit: 1 })).toEqual(['d/a']);
    // Emptied (its directory removed) and written again (a new directory) in between.
    await inAnotherProcess(root, 'delete', 'd/a', 'd/b', 'd/c');
    await inAnotherProcess(root, 'write', 'd/z');
    expect(await keys({ prefix: 'd/' })).toEqual(['d/z']);
  });

  it('holds the listing of a quiet directory: its mtime is what tells a change', async () => {
    await worker.write('a', 'a');
    await stamp(quiet, objects());
    expect(await keys()).toEqual(['a']);
    await worker.write('b', 'b');
    await stamp(quiet, objects());
    // Held: a change that left the mtime as it was is not seen (no filesystem does that once its tick has passed).
    expect(await keys()).toEqual(['a']);
    await worker.write('c', 'c');
    expect(await keys()).toEqual(['a', 'b', 'c']);
  });

  it('does not hold a listing read just after its directory changed: a change in the same clock tick keeps the mtime', async () => {
    // Ahead of the clock: the reads below come before the directory's mtime however slow the machine is (a write with
    // fsync can outlast the 50 ms settling window on a loaded one, which let the first listing be kept).
    const tick = new Date(Date.now() + 60_000);
    await worker.write('a', 'a');
    await stamp(tick, objects());
    expect(await keys()).toEqual(['a']);
    await worker.write('b', 'b');
    await stamp(tick, objects()); // as if the write fell in the same coarse tick as the one before
    expect(await keys()).toEqual(['a', 'b']);
  });

  it('sees a change inside a long segment continuation directory, whose parent mtime does not move', async () => {
    const long = 'p'.repeat(200);
    await worker.write(`${long}-1`, '1');
    await stamp(quiet, objects(), objects(`${long}+`));
    expect(await keys()).toEqual([`${long}-1`]);
    await worker.write(`${long}-2`, '2');
    expect(await keys()).toEqual([`${long}-1`, `${long}-2`]);
  });

  it('pages a nested tree one key at a time from every cursor, with and without a prefix', async () => {
    const all = ['a', 'a/b', 'a/b/c', 'a/b/c/d', 'a/b/e', 'a/bc', 'a/bc/x', 'a-z', 'a/c', 'b/x/y', 'é/1', 'z'];
    for (const key of all) await worker.write(key, key);
    for (const prefix of ['', 'a', 'a/', 'a/b', 'a/b/', 'b/x/', 'é']) {
      const paged = (await allPages((cursor) => web.list({ prefix, limit: 1, cursor }))).flat().map((item) => item.key);
      expect(paged, `prefix "${prefix}"`).toEqual(all.filter((key) => key.startsWith(prefix)).sort(compareKeys));
    }
  });

  it('a first page of versions shows versions another process created or deleted after it was held', async () => {
    const v1 = await worker.createVersion('doc', 'one', { message: 'one' });
    const v2 = await worker.createVersion('doc', 'two', { message: 'two' });
    await stamp(quiet, path.join(root, 'versions', 'doc~'));
    expect(await versionIds('doc')).toEqual([v2.versionId, v1.versionId]);

    const v3 = await worker.createVersion('doc', 'three', { message: 'three' });
    expect(await versionIds('doc')).toEqual([v3.versionId, v2.versionId, v1.versionId]);
    await stamp(quiet, path.join(root, 'versions', 'doc~'));
    expect(await versionIds('doc')).toEqual([v3.versionId, v2.versionId, v1.versionId]);
    await worker.deleteVersion('doc', v2.versionId);
    expect(await versionIds('doc')).toEqual([v3.versionId, v1.versionId]);
    const page = await web.listVersions('doc', { limit: 1 });
    expect((await web.listVersions('doc', { cursor: page.cursor })).items.map((version) => version.versionId)).toEqual([v1.versionId]);
  });
});
