/**
 * A disk store whose own directories go from under it (a volume unmounted, the directory removed or replaced by a
 * file) is unavailable, not empty: lookups do not answer NOT_FOUND, listings are not empty, and a write does not make
 * the tree again on the disk below the mount point (session 11).
 */
import { mkdir, mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DiskProvider } from '../../src/providers/disk.js';
import { PermissionDeniedError, ProviderUnavailableError } from '../../src/providers/errors.js';

const dirs: string[] = [];

afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function storeWithObjects(): Promise<{ disk: DiskProvider; root: string; aside: string }> {
  const base = await mkdtemp(path.join(os.tmpdir(), 'kyozo-disk-lost-'));
  dirs.push(base);
  const root = path.join(base, 'store');
  const disk = new DiskProvider({ root, fsync: false });
  await disk.write('a', 'kept');
  await disk.createVersion('docs/b', 'v1', { message: 'one' });
  return { disk, root, aside: path.join(base, 'aside') };
}

/** Every call a client makes, as it is answered: an error's class name, or what it answered. */
async function answers(disk: DiskProvider): Promise<Record<string, string>> {
  const answer = (promise: Promise<unknown>) =>
    promise.then(
      (value) => `answered ${JSON.stringify(value).slice(0, 40)}`,
      (error: Error) => error.constructor.name,
    );
  return {
    list: await answer(disk.list()),
    listPrefix: await answer(disk.list({ prefix: 'docs/' })),
    stat: await answer(disk.stat('a')),
    statMissing: await answer(disk.stat('never')),
    listVersions: await answer(disk.listVersions('docs/b')),
    write: await answer(disk.write('c', 'new')),
    stats: await answer(disk.stats()),
  };
}

describe('a disk store whose directories are gone', () => {
  it('is unavailable while its directory is emptied (a volume unmounted), and writes make nothing; back when it is', async () => {
    const { disk, root, aside } = await storeWithObjects();
    await rename(root, aside);
    await mkdir(root); // the mount point stays, empty
    const seen = await answers(disk);
    expect(new Set(Object.values(seen))).toEqual(new Set([ProviderUnavailableError.name]));
    expect(await readdir(root)).toEqual([]);
    expect((await disk.health()).status).toBe('down');

    await rm(root, { recursive: true });
    await rename(aside, root); // mounted again
    expect((await disk.stat('a')).size).toBe(4);
    expect((await disk.list()).items.map((item) => item.key)).toEqual(['a', 'docs/b']);
  });

  it('is unavailable when its directory is a file, and objects/ a file is refused, not taken for no objects', async () => {
    const { disk, root, aside } = await storeWithObjects();
    await rename(root, aside);
    await writeFile(root, 'not a directory');
    expect(new Set(Object.values(await answers(disk)))).toEqual(new Set([ProviderUnavailableError.name]));

    await rm(root);
    await rename(aside, root);
    await rename(path.join(root, 'objects'), path.join(root, 'objects.aside'));
    await writeFile(path.join(root, 'objects'), 'not a directory');
    const seen = await answers(disk);
    expect(seen.list).toBe(PermissionDeniedError.name);
    expect(seen.stat).toBe(PermissionDeniedError.name);
    expect(seen.statMissing).toBe(PermissionDeniedError.name);
  });

  it('still answers NOT_FOUND and empty listings for what is absent while its directories are there', async () => {
    const { disk } = await storeWithObjects();
    await expect(disk.stat('never')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect((await disk.list({ prefix: 'none/' })).items).toEqual([]);
    await disk.delete('docs/b', { allVersions: true });
    expect((await disk.list({ prefix: 'docs/' })).items).toEqual([]);
  });
});
