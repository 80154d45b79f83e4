/**
 * A filesystem failure the contract has no meaning for (EMFILE, EIO) is PROVIDER_UNAVAILABLE, and its message — which
 * clients see — names the operation, the key and the error code, never a path: Node's own message holds the absolute
 * path of the file (`EMFILE: too many open files, open '/srv/store/objects/a/b.txt~'`). The original stays as `cause`.
 * Failures are injected into node:fs/promises by a spy, made visible to the providers' named imports by
 * `syncBuiltinESMExports`.
 */
import fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { DiskProvider } from '../../src/providers/disk.js';
import type { StorageError } from '../../src/providers/errors.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { gitFixture } from '../support/git.js';

const { tempRepo, openProvider } = gitFixture('error-messages');
const temps: string[] = [];

afterEach(() => {
  vi.restoreAllMocks();
  syncBuiltinESMExports();
});
afterAll(async () => {
  await Promise.all(temps.map((dir) => rm(dir, { recursive: true, force: true })));
});

/** From now on, every `open` and `readFile` of a file under `root` fails as a process out of descriptors does. */
function runOutOfDescriptors(root: string): void {
  const emfile = (file: unknown) =>
    Object.assign(new Error(`EMFILE: too many open files, open '${String(file)}'`), { code: 'EMFILE', errno: -24, syscall: 'open', path: String(file) });
  for (const name of ['open', 'readFile'] as const) {
    const real = fs.promises[name] as (...args: unknown[]) => Promise<unknown>;
    vi.spyOn(fs.promises, name).mockImplementation((async (file: unknown, ...rest: unknown[]) => {
      if (typeof file === 'string' && file.startsWith(root)) throw emfile(file);
      return real(file, ...rest);
    }) as never);
  }
  syncBuiltinESMExports();
}

async function failure(promise: Promise<unknown>): Promise<StorageError> {
  return promise.then(
    () => expect.fail('expected a failure'),
    (error: StorageError) => error,
  );
}

function expectNoPath(error: StorageError, root: string, message: string): void {
  expect(error.code).toBe('PROVIDER_UNAVAILABLE');
  expect(error.message).toBe(message);
  expect(error.message).not.toContain(root);
  expect((error.cause as NodeJS.ErrnoException).code).toBe('EMFILE');
}

async function write(provider: StorageProvider, key: string): Promise<unknown> {
  return provider.write(key, Buffer.from('content'));
}

describe('filesystem errors name the operation, the key and the code, never a path', () => {
  it('disk: a write and a read that run out of descriptors', async () => {
    const root = await realTemp();
    const provider = new DiskProvider({ root, fsync: false });
    try {
      await write(provider, 'a/kept.txt');
      runOutOfDescriptors(root);
      expectNoPath(await failure(write(provider, 'a/b.txt')), root, 'disk store failed to write "a/b.txt": EMFILE');
      expectNoPath(await failure(provider.read('a/kept.txt')), root, 'disk store failed to read "a/kept.txt": EMFILE');
    } finally {
      await provider.close();
    }
  });

  it('git: a write that runs out of descriptors', async () => {
    const repo = await tempRepo();
    const provider = await openProvider(repo);
    await write(provider, 'a/kept.txt');
    runOutOfDescriptors(repo);
    expectNoPath(await failure(write(provider, 'a/b.txt')), repo, 'write "a/b.txt" failed: EMFILE');
  });
});

async function realTemp(): Promise<string> {
  const dir = await fs.promises.realpath(await mkdtemp(path.join(os.tmpdir(), 'kyozo-error-messages-')));
  temps.push(dir);
  return dir;
}
