/**
 * Atomic file replacement, the one place it is done: write a temporary file in the target's directory, fsync it,
 * rename it over the target, fsync the directory. A crash at any point leaves either the old file or the new one,
 * never a torn one; temporary files are named `.tmp-*` so listings can skip them.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export const TEMP_PREFIX = '.tmp-';

export function isTempName(name: string): boolean {
  return name.startsWith(TEMP_PREFIX);
}

export async function fsyncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Streams `source` into `target` atomically. `fsync: false` trades durability on power loss for speed. */
export async function writeFileAtomic(target: string, source: Readable, options: { fsync: boolean }): Promise<void> {
  const dir = path.dirname(target);
  await mkdir(dir, { recursive: true });
  const temp = path.join(dir, `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
  try {
    const handle = await open(temp, 'wx');
    try {
      await pipeline(source, createWriteStream('', { fd: handle.fd, autoClose: false }));
      if (options.fsync) await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, target);
  } catch (error) {
    await unlink(temp).catch(() => {});
    throw error;
  }
  if (options.fsync) await fsyncDirectory(dir);
}
