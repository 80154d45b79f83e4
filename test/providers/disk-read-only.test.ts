/**
 * A disk store on a read-only mount: every write is refused as PERMISSION_DENIED (not to be retried), whether or not
 * its key needs a new directory. Node's recursive mkdir reports EROFS as ENOENT, which read as a directory removed
 * meanwhile and made the write an outage retried for an hour. Needs a tmpfs mount (root): skipped, saying why, without.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeDirectories } from '../../src/providers/atomic-file.js';
import { DiskProvider } from '../../src/providers/disk.js';
import { PermissionDeniedError } from '../../src/providers/errors.js';

const mountPoint = await mkdtemp(path.join(os.tmpdir(), 'kyozo-ro-'));
const mount = (...args: string[]) => execFileSync('mount', args, { stdio: 'pipe' });
let mounted = false;
try {
  mount('-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mountPoint);
  mounted = true;
} catch (error) {
  console.log(`disk store on a read-only mount not covered: cannot mount a tmpfs here (${(error as Error).message.split('\n')[0]})`);
}

describe.skipIf(!mounted)('disk store on a read-only mount', () => {
  let store: DiskProvider;

  beforeAll(async () => {
    store = new DiskProvider({ root: path.join(mountPoint, 'store'), fsync: true });
    await store.write('dir/existing', 'before');
    await store.createVersion('versioned', 'v1', { message: 'first' });
    mount('-o', 'remount,ro', mountPoint);
  });

  afterAll(async () => {
    await store?.close();
    execFileSync('umount', [mountPoint]);
    await rm(mountPoint, { recursive: true, force: true });
  });

  it('mkdir -p of a new directory tells EROFS, not ENOENT', async () => {
    await expect(makeDirectories(path.join(mountPoint, 'store', 'new', 'deeper'))).rejects.toMatchObject({ code: 'EROFS' });
  });

  it('refuses every write as PERMISSION_DENIED, in a directory that exists or one it would make', async () => {
    for (const write of [
      () => store.write('dir/other', 'x'),
      () => store.write('new/dir/key', 'x'),
      () => store.createVersion('dir/existing', 'x', { message: 'its first version' }),
      () => store.createVersion('versioned', 'v2', { message: 'second' }),
    ]) {
      await expect(write()).rejects.toBeInstanceOf(PermissionDeniedError);
    }
    expect((await store.list()).items.map((item) => item.key)).toEqual(['dir/existing', 'versioned']);
  });
});

afterAll(async () => {
  if (!mounted) await rm(mountPoint, { recursive: true, force: true });
});
