/**
 * Disk provider: each store is a directory tree (DESIGN §5).
 *
 *   <root>/objects/<key path>              current objects, one record file each (content + trailer, disk-record.ts)
 *   <root>/versions/<key path>/<versionId> a key's versions, one record file each, newest = greatest name
 *
 * Key paths are disk-layout.ts's (`a` -> `a~`, `a/b` -> `a/b~`). Every file is written once, atomically
 * (atomic-file.ts), and never modified, which is what lets `createVersion` make the current object a hard link
 * to the version record it just wrote instead of a second copy of the content: the object's trailer is the
 * version's own (it also carries message and author, which ObjectInfo leaves out).
 *
 * Nothing leaves the root: keys are validated, and a path whose real path differs from the one built from the
 * key (a symlink somewhere below the root) is refused with InvalidKeyError, for reads and writes alike;
 * directories are created only below a checked ancestor, and records are opened with O_NOFOLLOW.
 */
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, readdir, realpath, rm, rmdir, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { isTempName, linkFileAtomic, retryWhileMissing, type AtomicWriteOptions, TEMP_PREFIX } from './atomic-file.js';
import { decodeCursor, encodeCursor, pageLimit } from './cursor.js';
import { DirectoryCache, type DirectoryReader } from './disk-directory-cache.js';
import { decodeEntry, keyPath, prefixDirectory } from './disk-layout.js';
import { readRecord, readTrailer, writeRecord, type RecordTrailer } from './disk-record.js';
import {
  InvalidKeyError,
  isStorageError,
  NotFoundError,
  PermissionDeniedError,
  ProviderUnavailableError,
  StorageFullError,
  type StorageError,
} from './errors.js';
import { requireIfMatch, type IfMatch } from './if-match.js';
import { compareKeys, validateKey, validatePrefix } from './keys.js';
import { describeWrite } from './metadata.js';
import { withProcessMutex } from './process-mutex.js';
import { lowerBoundKey } from './sorted-keys.js';
import type {
  Body,
  Capabilities,
  HealthReport,
  ListOptions,
  ObjectInfo,
  Page,
  ProviderStats,
  ReadOptions,
  RestoreOptions,
  StorageProvider,
  VersionInfo,
  VersionOptions,
  WriteOptions,
} from './types.js';
import { isVersionId, newVersionId } from './version-id.js';

export interface DiskProviderOptions {
  root: string;
  /** fsync files and directories on every write (`DISK_FSYNC`). */
  fsync: boolean;
}

interface Tree {
  root: string;
  objects: string;
  versions: string;
}

interface WalkEntry {
  kind: 'object' | 'segment';
  /** The key (object) or key prefix ending in `/` (segment) this entry stands for. */
  name: string;
  /** Relative to the directory listed (a path, not a name, for an entry of a continuation directory). */
  file: string;
}

/** Trailer reads in flight at once for a list page or stats: enough to keep libuv's 4 threads busy. */
const READ_WIDTH = 16;
/** Entries each cache of directory listings holds at most (object entries: some 130 bytes each). */
const MAX_CACHED_ENTRIES = 250_000;

function errnoCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

function isMissing(error: unknown): boolean {
  return errnoCode(error) === 'ENOENT' || errnoCode(error) === 'ENOTDIR';
}

/** A `catch` handler: a missing file or directory is `undefined`, any other error goes on. */
function ignoreMissing(error: unknown): undefined {
  if (isMissing(error)) return undefined;
  throw error;
}

/** The contract's error for a filesystem failure; `missing` says what ENOENT means to this operation. */
function toStorageError(error: unknown, missing?: string): StorageError {
  if (isStorageError(error)) return error;
  const code = errnoCode(error);
  if (missing !== undefined && (code === 'ENOENT' || code === 'ENOTDIR')) return new NotFoundError(missing, { cause: error });
  switch (code) {
    case 'ELOOP':
      return new InvalidKeyError('the key leads through a symlink, which this store does not follow', { cause: error });
    case 'ENAMETOOLONG':
      return new InvalidKeyError('the key makes a path too long for this filesystem', { cause: error });
    case 'ENOSPC':
    case 'EDQUOT':
      return new StorageFullError('the disk is full', { cause: error });
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return new PermissionDeniedError(`the store's directory is not writable (${code})`, { cause: error });
    default:
      return new ProviderUnavailableError(`disk store failed: ${(error as Error | undefined)?.message ?? String(error)}`, { cause: error });
  }
}

async function guarded<T>(operation: () => Promise<T>, missing?: string): Promise<T> {
  try {
    return await operation();
  } catch (error) {
    throw toStorageError(error, missing);
  }
}

async function mapLimited<T, R>(items: T[], width: number, task: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) {
        const at = next++;
        results[at] = await task(items[at]!);
      }
    }),
  );
  return results;
}

/** A record's trailer, or undefined when it disappeared (a concurrent delete) since its name was read. */
function trailerIfPresent(file: string): Promise<RecordTrailer | undefined> {
  return readTrailer(file).catch(ignoreMissing);
}

function objectInfo(key: string, trailer: RecordTrailer): ObjectInfo {
  const info: ObjectInfo = {
    key,
    size: trailer.size,
    etag: trailer.etag,
    contentType: trailer.contentType,
    metadata: trailer.metadata,
    updatedAt: trailer.updatedAt,
  };
  if (trailer.versionId !== undefined) info.versionId = trailer.versionId;
  return info;
}

function versionInfo(key: string, trailer: RecordTrailer): VersionInfo {
  const info: VersionInfo = { versionId: trailer.versionId!, key, size: trailer.size, etag: trailer.etag, createdAt: trailer.updatedAt };
  if (trailer.message !== undefined) info.message = trailer.message;
  if (trailer.author !== undefined) info.author = trailer.author;
  return info;
}

/**
 * The entries of one directory in key order. A continuation directory (a long segment's first piece) is
 * flattened into its parent's entries: its keys interleave with its siblings', so it cannot be ordered as one.
 */
async function directoryEntries(dir: string, keyPrefix: string, read: DirectoryReader): Promise<WalkEntry[]> {
  const sortable: { entry: WalkEntry; bytes: Buffer }[] = [];
  const collect = async (subdir: string, namePrefix: string): Promise<void> => {
    for (const dirent of await read.entries(path.join(dir, subdir))) {
      // Symlinks are neither: never followed, never listed.
      if (!dirent.isFile() && !dirent.isDirectory()) continue;
      const decoded = decodeEntry(dirent.name, dirent.isDirectory());
      if (!decoded) continue;
      const name = namePrefix + decoded.part;
      const file = path.join(subdir, dirent.name);
      if (decoded.kind === 'continuation') {
        await collect(file, name).catch((error: unknown) => {
          if (!isMissing(error)) throw error;
        });
      } else sortable.push({ entry: { kind: decoded.kind, name, file }, bytes: Buffer.from(name, 'utf8') });
    }
  };
  await collect('', keyPrefix);
  return sortable.sort((a, b) => Buffer.compare(a.bytes, b.bytes)).map(({ entry }) => entry);
}

/**
 * Where a walk of sorted `entries` starts for keys from `from` on: the first entry not before `from`, or the
 * segment before it whose subtree holds `from`.
 */
function walkStart(entries: readonly WalkEntry[], from: string): number {
  let at = lowerBoundKey(entries.length, (i) => entries[i]!.name, from);
  while (at > 0 && entries[at - 1]!.kind === 'segment' && from.startsWith(entries[at - 1]!.name)) at--;
  return at;
}

/** The version ids in a key's versions directory, oldest (smallest) first. */
async function versionIds(dir: string, read: DirectoryReader): Promise<string[]> {
  return (await read.names(dir)).filter(isVersionId).sort();
}

export class DiskProvider implements StorageProvider {
  readonly kind = 'disk' as const;
  readonly capabilities: Capabilities = {
    versioning: 'explicit',
    presign: 'signed-url',
    diff: false,
    branches: false,
    rangeReads: true,
  };

  private readonly root: string;
  private readonly fsync: boolean;
  private tree?: Promise<Tree>;
  private readonly objectListings = new DirectoryCache<WalkEntry>(MAX_CACHED_ENTRIES);
  private readonly versionListings = new DirectoryCache<string>(MAX_CACHED_ENTRIES);

  constructor(options: DiskProviderOptions) {
    this.root = path.resolve(options.root);
    this.fsync = options.fsync;
  }

  async write(key: string, body: Body, opts?: WriteOptions): Promise<ObjectInfo> {
    validateKey(key);
    const described = describeWrite(opts);
    return this.mutation(key, async () => {
      const target = await this.writableObjectPath(key);
      if (opts?.ifMatch !== undefined) await this.checkIfMatch(target, key, opts.ifMatch);
      return objectInfo(key, await writeRecord(target, body, described, this.atomic(target)));
    });
  }

  async read(key: string, opts?: ReadOptions): Promise<{ info: ObjectInfo; body: Readable }> {
    validateKey(key);
    return guarded(async () => {
      const { trailer, body } = await readRecord(await this.readablePath(key, opts?.versionId), opts?.range);
      return { info: objectInfo(key, trailer), body };
    }, this.notFound(key, opts?.versionId));
  }

  async stat(key: string, opts?: { versionId?: string }): Promise<ObjectInfo> {
    validateKey(key);
    return guarded(async () => {
      const trailer = await readTrailer(await this.readablePath(key, opts?.versionId));
      return objectInfo(key, trailer);
    }, this.notFound(key, opts?.versionId));
  }

  async delete(key: string, opts?: { allVersions?: boolean }): Promise<void> {
    validateKey(key);
    await this.mutation(key, async () => {
      const tree = await this.ready();
      const object = path.join(tree.objects, keyPath(key));
      if (await this.isReal(object)) {
        await unlink(object).catch((error: unknown) => {
          if (!isMissing(error)) throw error;
        });
        await this.pruneEmpty(path.dirname(object), tree.objects);
      }
      if (opts?.allVersions) {
        const versions = path.join(tree.versions, keyPath(key));
        if (await this.isReal(versions)) {
          await rm(versions, { recursive: true, force: true });
          await this.pruneEmpty(path.dirname(versions), tree.versions);
        }
      }
    });
  }

  async list(opts?: ListOptions): Promise<Page<ObjectInfo>> {
    const prefix = validatePrefix(opts?.prefix);
    const limit = pageLimit(opts?.limit);
    const after = decodeCursor(opts?.cursor);
    return guarded(async () => {
      const tree = await this.ready();
      const start = prefixDirectory(prefix);
      const startDir = path.join(tree.objects, start.dir);
      if (!(await this.isReal(startDir))) return { items: [] };
      const walk = this.walk(startDir, start.keyPrefix, prefix, after);
      const found: { key: string; path: string }[] = [];
      let more = false;
      for await (const entry of walk) {
        if (found.length === limit) {
          more = true;
          break;
        }
        found.push(entry);
      }
      const trailers = await mapLimited(found, READ_WIDTH, (entry) => trailerIfPresent(entry.path));
      const items = found.flatMap((entry, i) => (trailers[i] ? [objectInfo(entry.key, trailers[i])] : []));
      return more ? { items, cursor: encodeCursor(found[found.length - 1]!.key) } : { items };
    });
  }

  async createVersion(key: string, body: Body, opts: VersionOptions): Promise<VersionInfo> {
    validateKey(key);
    const described = describeWrite(opts);
    return this.mutation(key, async () => {
      const target = await this.writableObjectPath(key);
      if (opts.ifMatch !== undefined) await this.checkIfMatch(target, key, opts.ifMatch);
      return this.recordVersion(key, target, body, { ...described, message: opts.message, author: opts.author });
    });
  }

  async listVersions(key: string, opts?: { cursor?: string; limit?: number }): Promise<Page<VersionInfo>> {
    validateKey(key);
    const limit = pageLimit(opts?.limit);
    const after = decodeCursor(opts?.cursor);
    return guarded(async () => {
      const dir = path.join((await this.ready()).versions, keyPath(key));
      if (!(await this.isReal(dir))) return { items: [] };
      const ids = (await this.versionListings.get(dir, (read) => versionIds(dir, read)).catch(ignoreMissing)) ?? [];
      // Newest first: down from the newest, or from the one just older than the cursor.
      const start = (after === undefined ? ids.length : lowerBoundKey(ids.length, (i) => ids[i]!, after)) - 1;
      const page: string[] = [];
      for (let at = start; at >= 0 && page.length < limit; at--) page.push(ids[at]!);
      const trailers = await mapLimited(page, READ_WIDTH, (id) => trailerIfPresent(path.join(dir, id)));
      const items = trailers.flatMap((trailer) => (trailer ? [versionInfo(key, trailer)] : []));
      return start - limit >= 0 ? { items, cursor: encodeCursor(page[page.length - 1]!) } : { items };
    });
  }

  async restoreVersion(key: string, versionId: string, opts?: RestoreOptions): Promise<VersionInfo> {
    validateKey(key);
    return this.mutation(key, async () => {
      const source = await guarded(() => this.readablePath(key, versionId), this.notFound(key, versionId));
      const target = await this.writableObjectPath(key);
      const { trailer, body } = await guarded(() => readRecord(source), this.notFound(key, versionId));
      // Streamed through the hash again: the restored content is verified, not trusted.
      return this.recordVersion(key, target, body, {
        contentType: trailer.contentType,
        metadata: trailer.metadata,
        message: opts?.message ?? `restore ${versionId}`,
        author: opts?.author,
      });
    });
  }

  /** Unlinks the version record; a current object made from it is a hard link of its own and keeps the content. */
  async deleteVersion(key: string, versionId: string): Promise<void> {
    validateKey(key);
    if (!isVersionId(versionId)) return;
    await this.mutation(key, async () => {
      const tree = await this.ready();
      const dir = path.join(tree.versions, keyPath(key));
      const record = path.join(dir, versionId);
      if (!(await this.isReal(record))) return;
      await unlink(record).catch((error: unknown) => {
        if (!isMissing(error)) throw error;
      });
      await this.pruneEmpty(dir, tree.versions);
    });
  }

  async removeLeftovers(olderThanMs: number): Promise<number> {
    return guarded(async () => {
      const tree = await this.ready();
      const cutoff = Date.now() - olderThanMs;
      let removed = 0;
      const sweep = async (dir: string): Promise<void> => {
        const entries = (await readdir(dir, { withFileTypes: true }).catch(ignoreMissing)) ?? [];
        for (const entry of entries) {
          const child = path.join(dir, entry.name);
          if (entry.isDirectory()) await sweep(child);
          else if (entry.isFile() && isTempName(entry.name)) {
            // A writer may rename its temp file away at any moment: one gone is skipped, not an error.
            const modified = await lstat(child).then((stats) => stats.mtimeMs, ignoreMissing);
            if (modified !== undefined && modified < cutoff && (await unlink(child).then(() => true, ignoreMissing))) removed++;
          }
        }
      };
      await sweep(tree.objects);
      await sweep(tree.versions);
      return removed;
    });
  }

  async stats(): Promise<ProviderStats> {
    return guarded(async () => {
      const tree = await this.ready();
      const files: string[] = [];
      for await (const entry of this.walk(tree.objects, '', '', undefined)) files.push(entry.path);
      const trailers = await mapLimited(files, READ_WIDTH, trailerIfPresent);
      const present = trailers.filter((trailer) => trailer !== undefined);
      return {
        kind: this.kind,
        objects: present.length,
        bytes: present.reduce((sum, trailer) => sum + trailer.size, 0),
        versions: await this.countVersions(tree.versions),
        detail: { root: this.root, fsync: this.fsync },
      };
    });
  }

  async health(): Promise<HealthReport> {
    const started = performance.now();
    try {
      const tree = await this.ready();
      const probe = path.join(tree.root, `${TEMP_PREFIX}health-${randomBytes(6).toString('hex')}`);
      await writeFile(probe, 'ok');
      await unlink(probe);
      return { status: 'ok', detail: `${this.root} is writable`, latencyMs: performance.now() - started };
    } catch (error) {
      return { status: 'down', detail: `${this.root}: ${(error as Error).message}`, latencyMs: performance.now() - started };
    }
  }

  async close(): Promise<void> {
    // Every call opens and closes its own files: nothing is held between calls.
  }

  /** Makes the tree on first use; the root's real path is what every path built later is checked against. */
  private ready(): Promise<Tree> {
    this.tree ??= (async () => {
      await mkdir(this.root, { recursive: true });
      const root = await realpath(this.root);
      const tree = { root, objects: path.join(root, 'objects'), versions: path.join(root, 'versions') };
      await mkdir(tree.objects, { recursive: true });
      await mkdir(tree.versions, { recursive: true });
      return tree;
    })().catch((error: unknown) => {
      this.tree = undefined;
      throw error;
    });
    return this.tree;
  }

  private atomic(target: string): AtomicWriteOptions {
    return { fsync: this.fsync, onMissingDirectory: () => this.ensureDirectory(path.dirname(target)) };
  }

  /**
   * A mutation of `key`, its errors mapped to the contract's. Mutations of one key run one at a time in this
   * process, so an `ifMatch` check and the rename after it act as one step; processes sharing a root are not
   * serialized (see the README).
   */
  private mutation<T>(key: string, fn: () => Promise<T>): Promise<T> {
    return guarded(() => withProcessMutex(`disk:${this.root}:${key}`, fn));
  }

  private notFound(key: string, versionId: string | undefined): string {
    return versionId === undefined ? `no object "${key}"` : `no version "${versionId}" of "${key}"`;
  }

  /**
   * True when `file` exists and its real path is the one built from the key; false when it does not exist.
   * Anything else means a symlink (or `..` trick) below the root.
   */
  private async isReal(file: string): Promise<boolean> {
    let real: string;
    try {
      real = await realpath(file);
    } catch (error) {
      if (isMissing(error)) return false;
      throw error;
    }
    if (real !== file) throw new InvalidKeyError('the key leads through a symlink, which this store does not follow');
    return true;
  }

  /** Creates `dir` below its deepest existing ancestor once that ancestor is checked to be a real directory. */
  private async ensureDirectory(dir: string): Promise<void> {
    const { root } = await this.ready();
    // A concurrent delete may prune an ancestor between the check and the mkdir: check and make it again.
    await retryWhileMissing(async () => {
      let existing = dir;
      while (existing !== root && !(await this.isReal(existing))) existing = path.dirname(existing);
      if (existing !== dir) await mkdir(dir, { recursive: true });
    });
  }

  /**
   * Where a write of `key` lands, its directory made and checked to be real. The file itself is not checked: a write
   * renames a new file over it, which replaces a symlink there instead of following it (and checking would cost a
   * failed lookup for every new key).
   */
  private async writableObjectPath(key: string): Promise<string> {
    const target = path.join((await this.ready()).objects, keyPath(key));
    const dir = path.dirname(target);
    if (!(await this.isReal(dir))) await this.ensureDirectory(dir);
    return target;
  }

  private async readablePath(key: string, versionId: string | undefined): Promise<string> {
    const tree = await this.ready();
    if (versionId !== undefined && !isVersionId(versionId)) throw new NotFoundError(this.notFound(key, versionId));
    const file =
      versionId === undefined ? path.join(tree.objects, keyPath(key)) : path.join(tree.versions, keyPath(key), versionId);
    if (!(await this.isReal(file))) throw new NotFoundError(this.notFound(key, versionId));
    return file;
  }

  private async checkIfMatch(target: string, key: string, ifMatch: IfMatch): Promise<void> {
    const current = (await this.isReal(target)) ? await trailerIfPresent(target) : undefined;
    requireIfMatch(key, ifMatch, current?.etag);
  }

  /** Writes a version record, then makes it the current object (a hard link: the content is written once). */
  private async recordVersion(
    key: string,
    target: string,
    body: Body,
    description: { contentType: string; metadata: Record<string, string>; message: string; author?: VersionOptions['author'] },
  ): Promise<VersionInfo> {
    const dir = path.join((await this.ready()).versions, keyPath(key));
    if (!(await this.isReal(dir))) await this.ensureDirectory(dir);
    const versionId = newVersionId();
    const record = path.join(dir, versionId);
    const trailer = await writeRecord(record, body, { ...description, versionId }, this.atomic(record));
    await linkFileAtomic(record, target, this.atomic(target));
    return versionInfo(key, trailer);
  }

  /** Removes empty directories from `dir` up to (not including) `top`; a directory in use stops it. */
  private async pruneEmpty(dir: string, top: string): Promise<void> {
    for (let current = dir; current !== top && current.startsWith(top); current = path.dirname(current)) {
      try {
        await rmdir(current);
      } catch {
        return;
      }
    }
  }

  /**
   * Keys below `dir` starting with `prefix` and after `after`, in compareKeys order: depth-first, each directory's
   * entries in key order, from the first that can hold such a key. Once segments are whole, no entry's name is a
   * proper prefix of a sibling directory's keys except an object's own, so a subtree's keys all sort between its
   * neighbours'.
   */
  private async *walk(dir: string, keyPrefix: string, prefix: string, after: string | undefined): AsyncGenerator<{ key: string; path: string }> {
    let entries: readonly WalkEntry[];
    try {
      entries = await this.objectListings.get(dir, (read) => directoryEntries(dir, keyPrefix, read));
    } catch (error) {
      if (isMissing(error)) return;
      throw error;
    }
    const from = after !== undefined && compareKeys(after, prefix) >= 0 ? after : prefix;
    for (let at = walkStart(entries, from); at < entries.length; at++) {
      const entry = entries[at]!;
      // Keys starting with `prefix` are contiguous: an entry past them ends the walk of this directory.
      if (!entry.name.startsWith(prefix) && compareKeys(entry.name, prefix) > 0) return;
      if (entry.kind === 'object') {
        if (entry.name.startsWith(prefix) && (after === undefined || compareKeys(entry.name, after) > 0)) {
          yield { key: entry.name, path: path.join(dir, entry.file) };
        }
        continue;
      }
      if (!entry.name.startsWith(prefix) && !prefix.startsWith(entry.name)) continue;
      // A subtree wholly before the cursor is skipped without being read.
      if (after !== undefined && compareKeys(entry.name, after) < 0 && !after.startsWith(entry.name)) continue;
      yield* this.walk(path.join(dir, entry.file), entry.name, prefix, after);
    }
  }

  /** Version records below `dir`: a directory whose name ends in `~` holds one key's versions. */
  private async countVersions(dir: string): Promise<number> {
    let count = 0;
    // A directory a concurrent delete removed holds no versions.
    for (const dirent of (await readdir(dir, { withFileTypes: true }).catch(ignoreMissing)) ?? []) {
      if (!dirent.isDirectory()) continue;
      const child = path.join(dir, dirent.name);
      if (dirent.name.endsWith('~')) count += ((await readdir(child).catch(ignoreMissing)) ?? []).filter(isVersionId).length;
      else count += await this.countVersions(child);
    }
    return count;
  }
}
