/**
 * Atomic file replacement, the one place for it (disk objects and versions, ram snapshots). New content goes to a
 * temp file in the target's own directory (a rename is atomic only within one filesystem), is made durable, and is
 * renamed over the target; then the directory is synced so the rename itself survives a power cut. A reader or a
 * crash sees the old file or the new one, never part of either. A crash before the rename leaves a `.tmp-*` file
 * behind and the old content in place; readers of a directory skip temp names (`isTempName`).
 */
import { randomBytes } from 'node:crypto';
import { copyFile, link, mkdir, open, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { Body } from './types.js';

export const TEMP_PREFIX = '.tmp-';
/**
 * Exactly the names `tempPathFor` (and the disk health probe) make. A user's key may start with `.tmp-` too, but its
 * file always ends in the layout's object mark (`disk-layout.ts`), so a sweep by this pattern never takes it.
 */
const TEMP_NAME = /^\.tmp-(?:health-)?[0-9a-f]+$/;

export interface AtomicWriteOptions {
  /** Sync the file before the rename and its directory after it (`DISK_FSYNC`). Off, a crash may lose the write. */
  fsync: boolean;
  /**
   * Called when the target's directory is missing (never made, or removed by a concurrent cleanup of empty
   * directories); the open is retried after it, a few times. Default: make it with `mkdir -p`. The disk provider passes
   * its own, which refuses to create directories through a symlink.
   */
  onMissingDirectory?: () => Promise<void>;
}

export function isTempName(name: string): boolean {
  return TEMP_NAME.test(name);
}

function tempPathFor(target: string): string {
  return path.join(path.dirname(target), `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
}

function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

/**
 * `mkdir -p dir`; answers the first directory it made, as `mkdir` does. Node's recursive mkdir reports a level it
 * could not make for another reason as ENOENT (EROFS on a read-only mount, for one): the store would take a
 * read-only disk for a directory removed meanwhile and retry for an hour. The level that failed is tried again
 * alone, which tells the real reason.
 */
export async function makeDirectories(dir: string): Promise<string | undefined> {
  try {
    return await mkdir(dir, { recursive: true });
  } catch (error) {
    if (errorCode(error) !== 'ENOENT') throw error;
    throw await reasonNotMade(dir, error);
  }
}

async function reasonNotMade(dir: string, reported: unknown): Promise<unknown> {
  let missing = dir;
  for (let parent = path.dirname(missing); parent !== missing; missing = parent, parent = path.dirname(parent)) {
    if (await stat(parent).then(() => true, () => false)) break;
  }
  const alone = await mkdir(missing).then(() => undefined, (error: unknown) => error);
  // Made now, there already, or its parent gone again (a concurrent cleanup): ENOENT stands, and is retried.
  return alone === undefined || ['EEXIST', 'ENOENT'].includes(errorCode(alone) ?? '') ? reported : alone;
}

/**
 * How often a step that failed with ENOENT is tried again: a concurrent cleanup of empty directories (a delete in
 * another process) can remove a directory again right after it was made.
 */
const MISSING_RETRIES = 5;

/** Runs `step`, again up to `MISSING_RETRIES` times while it fails with ENOENT, with `repair` before each retry. */
export async function retryWhileMissing<T>(step: () => Promise<T>, repair?: () => Promise<void>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await step();
    } catch (error) {
      if (errorCode(error) !== 'ENOENT' || attempt === MISSING_RETRIES) throw error;
    }
    await repair?.();
  }
}

/** Runs `create` in the target's directory, making the directory (`onMissingDirectory`) when it is missing. */
function inDirectory<T>(target: string, create: () => Promise<T>, options: AtomicWriteOptions): Promise<T> {
  return retryWhileMissing(create, options.onMissingDirectory ?? (() => makeDirectories(path.dirname(target)).then(() => undefined)));
}

/** Writes every byte: a write to a regular file may, rarely, be short. */
async function writeFully(file: FileHandle, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) {
    const { bytesWritten } = await file.write(bytes, offset, bytes.length - offset);
    offset += bytesWritten;
  }
}

/** What an atomic write takes: bytes, a string, or a stream or async iterable of chunks (consumed once). */
export type AtomicContent = Body | AsyncIterable<Uint8Array | string>;

async function writeBody(file: FileHandle, body: AtomicContent): Promise<void> {
  if (typeof body === 'string' || body instanceof Uint8Array) {
    await writeFully(file, typeof body === 'string' ? Buffer.from(body, 'utf8') : body);
    return;
  }
  // Awaiting each write before pulling the next chunk is the backpressure: a 200 MiB body never sits in memory.
  for await (const chunk of body as AsyncIterable<Uint8Array | string>) {
    await writeFully(file, typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk);
  }
}

export async function fsyncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Runs `step` on the temp file `temp`, removing the temp file if the step fails. */
async function onTemp<T>(temp: string, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (error) {
    await unlink(temp).catch(() => {});
    throw error;
  }
}

/** Renames `temp` over `target`, then syncs the directory so that the rename itself survives a power cut. */
async function renameOver(temp: string, target: string, options: AtomicWriteOptions): Promise<void> {
  await onTemp(temp, () => rename(temp, target));
  if (options.fsync) await fsyncDirectory(path.dirname(target));
}

/** A temp file in its target's directory holding the whole new content, already durable with `fsync`. */
export interface StagedFile {
  /** Renames the temp file over the target (once). */
  publish(): Promise<void>;
  /**
   * Makes `other` a second name of the staged content before it is published (`linkFileAtomic`). A crash before the
   * publish leaves `other` in place and the temp file for the sweep: removing that name leaves `other`'s content.
   */
  linkTo(other: string, options: AtomicWriteOptions): Promise<void>;
  /** Removes the temp file, unless it was published: for a write refused or failed after staging. */
  discard(): Promise<void>;
}

/**
 * The slow half of an atomic write, apart so that it can run outside any lock: `body` written to a temp file next
 * to `target` and synced. The caller then publishes it (a rename) or discards it.
 */
export async function stageFile(target: string, body: AtomicContent, options: AtomicWriteOptions): Promise<StagedFile> {
  const temp = tempPathFor(target);
  let file: FileHandle;
  try {
    file = await inDirectory(target, () => open(temp, 'wx'), options);
  } catch (error) {
    if (body instanceof Readable) body.destroy();
    throw error;
  }
  await onTemp(temp, async () => {
    try {
      await writeBody(file, body);
      // fdatasync also flushes the size, which is all the metadata a reader of the content needs.
      if (options.fsync) await file.datasync();
    } finally {
      await file.close();
    }
  });
  let settled = false;
  return {
    publish: async () => {
      settled = true;
      await renameOver(temp, target, options);
    },
    linkTo: (other, linkOptions) => linkFileAtomic(temp, other, linkOptions),
    discard: async () => {
      if (settled) return;
      settled = true;
      await unlink(temp).catch(() => {});
    },
  };
}

/** Replaces `target` with `body` atomically. */
export async function writeFileAtomic(target: string, body: AtomicContent, options: AtomicWriteOptions): Promise<void> {
  await (await stageFile(target, body, options)).publish();
}

/**
 * Makes `target` a second name of the existing, never-modified file `source` (a version record becoming the
 * current object): no content is copied. Falls back to a copy where the filesystem has no hard links.
 */
export async function linkFileAtomic(source: string, target: string, options: AtomicWriteOptions): Promise<void> {
  const temp = tempPathFor(target);
  let linked = true;
  await inDirectory(target, async () => {
    try {
      await link(source, temp);
    } catch (error) {
      if (!['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'EXDEV', 'EMLINK'].includes(errorCode(error) ?? '')) throw error;
      linked = false;
      await copyFile(source, temp);
    }
  }, options);
  await onTemp(temp, async () => {
    if (linked || !options.fsync) return;
    const copy = await open(temp, 'r+');
    try {
      await copy.datasync();
    } finally {
      await copy.close();
    }
  });
  await renameOver(temp, target, options);
}
