/**
 * Disk provider: each store is a directory tree (DESIGN §5).
 *
 *   <root>/objects/<key path>              current objects, one record file each (content + trailer, disk-record.ts)
 *   <root>/versions/<key path>/<versionId> a key's versions, one record file each, newest = greatest name
 *
 * Key paths are disk-layout.ts's (`a` -> `a~`, `a/b` -> `a/b~`). Every file is written once, atomically
 * (atomic-file.ts), and never modified, which is what lets `createVersion` make the current object a hard link
 * to the version record it writes instead of a second copy of the content: the object's trailer is the
 * version's own (it also carries message and author, which ObjectInfo leaves out). A version becomes current
 * before it is listed: a crash between the two leaves the new content current and the version unlisted, which the
 * job's retry makes again; never a listed version that is not current, which the retry would take as done.
 *
 * Nothing leaves the root: keys are validated, and a path whose real path differs from the one built from the
 * key (a symlink somewhere below the root) is refused with InvalidKeyError, for reads and writes alike;
 * directories are created only below a checked ancestor, and records are opened with O_NOFOLLOW.
 */
import { randomBytes } from 'node:crypto';
import { constants, type Dirent } from 'node:fs';
import { access, lstat, opendir, readdir, realpath, rmdir, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { fsyncDirectory, isTempName, makeDirectories, retryWhileMissing, type AtomicWriteOptions, TEMP_PREFIX } from './atomic-file.js';
import { requireExpectedEtag } from './body.js';
import { decodeCursor, decodeVersionsCursor, encodeCursor, encodeVersionsCursor, pageLimit } from './cursor.js';
import { DirectoryCache, type DirectoryReader } from './disk-directory-cache.js';
import { mapLimit } from './map-limit.js';
import { decodeEntry, keyPath, prefixDirectory } from './disk-layout.js';
import {
  BodyError,
  DamagedRecordError,
  readRecord,
  readTrailer,
  stageRecord,
  type RecordDescription,
  type RecordTrailer,
  type StagedRecord,
} from './disk-record.js';
import {
  DataCorruptedError,
  failureCode,
  InvalidKeyError,
  isStorageError,
  NotFoundError,
  PermissionDeniedError,
  PreconditionFailedError,
  ProviderUnavailableError,
  StorageFullError,
  type StorageError,
} from './errors.js';
import { isFenceError, passFence } from './fence.js';
import { hasPreconditions, requireIfNoneMatch, requirePreconditions, type Preconditions } from './if-match.js';
import { compareKeys, validateKey, validatePrefix } from './keys.js';
import { describeWrite } from './metadata.js';
import { withProcessMutex } from './process-mutex.js';
import { lowerBoundKey } from './sorted-keys.js';
import type {
  Body,
  Capabilities,
  DeleteOptions,
  Fenced,
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
import { isVersionId, mintAfter } from './version-id.js';
import { VersionsInFlight } from './versions-in-flight.js';

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

/** A directory a write may have made, and the top (objects/ or versions/) that pruning it stops at. */
type MadeDirectory = [dir: string, top: string];

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

/** The record a read of `key` (at `versionId`) is after, as its errors name it: `object "k"` or `version "v" of "k"`. */
function subjectOf(key: string, versionId: string | undefined): string {
  return versionId === undefined ? `object "${key}"` : `version "${versionId}" of "${key}"`;
}

/**
 * The contract's error for a filesystem failure. `failed` names the operation and its key (`read "k"`); `subject`
 * (`subjectOf`) names what the operation reads: ENOENT is then its absence. Keys and error codes only, never a path
 * or a Node error's message, which holds one (clients see the message; the original stays as `cause`).
 */
function toStorageError(error: unknown, failed: string, subject?: string): StorageError {
  if (error instanceof DamagedRecordError && subject !== undefined) {
    return new DataCorruptedError(`the stored ${subject} is damaged: ${error.why}`, { cause: error });
  }
  if (isStorageError(error)) return error;
  const code = errnoCode(error);
  if (subject !== undefined && (code === 'ENOENT' || code === 'ENOTDIR')) return new NotFoundError(`no ${subject}`, { cause: error });
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
    case 'ENOTDIR':
    case 'EISDIR':
      // Something this store did not make stands in the key's path: no retry changes that.
      return new PermissionDeniedError(`the key's path in the store is taken by a file or directory the store did not make (${code})`, { cause: error });
    default:
      return new ProviderUnavailableError(`disk store failed to ${failed}: ${failureCode(error)}`, { cause: error });
  }
}

async function guarded<T>(operation: () => Promise<T>, failed: string, subject?: string): Promise<T> {
  try {
    return await operation();
  } catch (error) {
    // The caller's body failed, not the store: its error goes back as it is (as on every provider).
    if (error instanceof BodyError) throw error.cause;
    if (isFenceError(error)) throw error;
    throw toStorageError(error, failed, subject);
  }
}

/** A record's trailer, or undefined when it disappeared (a concurrent delete) since its name was read. */
function trailerIfPresent(file: string): Promise<RecordTrailer | undefined> {
  return readTrailer(file).catch(ignoreMissing);
}

/**
 * For listings: a record's trailer, or undefined when it disappeared or is damaged. One damaged record (a crash
 * without fsync can leave one cut short) must not fail every page and count of the store; `damaged` gets its path.
 */
function trailerIfReadable(file: string, damaged?: string[]): Promise<RecordTrailer | undefined> {
  return readTrailer(file).catch((error: unknown) => {
    if (!(error instanceof DamagedRecordError)) return ignoreMissing(error);
    damaged?.push(file);
    return undefined;
  });
}

/** Creates and removes a file in `dir`: whether a write there can succeed now, as nothing short of one tells. */
/**
 * Whether files can be made where writes go. objects/ and versions/ are checked for permission (a read-only mount, an
 * owner changed by a restore run as root) without making anything in them: a file made there would change their
 * mtime and make the directory cache read a large listing again after every health check. The probe file goes in
 * the root instead, on the same filesystem: it catches a full disk or a quota.
 */
async function probeWritable(tree: Tree): Promise<void> {
  await access(tree.objects, constants.W_OK);
  await access(tree.versions, constants.W_OK);
  const probe = path.join(tree.root, `${TEMP_PREFIX}health-${randomBytes(6).toString('hex')}`);
  try {
    await writeFile(probe, 'ok', { flag: 'wx' });
  } finally {
    // On a full disk the probe is made but cannot be filled: removed here, not left for the sweep.
    await unlink(probe).catch(() => {});
  }
}

/** One of the store's own directories (`requireOwnDirectories`): there, and a directory of its own. */
async function requireOwnDirectory(tree: Tree, dir: string): Promise<void> {
  const stats = await lstat(dir).catch(ignoreMissing);
  const name = dir === tree.root ? 'directory' : `${path.basename(dir)}/`;
  if (stats === undefined || (dir === tree.root && !stats.isDirectory())) {
    throw new ProviderUnavailableError(`the store's ${name} is gone (a volume no longer mounted?): not taken for an empty store`);
  }
  if (!stats.isDirectory()) throw new PermissionDeniedError(`the store's ${name} is not a directory of its own (a symlink?), which the store does not follow`);
}

/**
 * The store's top directories as it made them: objects/ and versions/ the root's own directories, not symlinks
 * (stats and health walk them from the top, where no key's path is checked, and would follow one out of the store),
 * and all three there. Gone from under a running store (a volume unmounted, a directory removed), they are not an
 * empty store: a miss would be answered NOT_FOUND, a listing empty, and the next write would make the tree again on
 * the disk below the mount point. Checked by stats and health, and (`requireTopDirectory`) by every lookup that misses.
 */
async function requireOwnDirectories(tree: Tree): Promise<void> {
  for (const dir of [tree.root, tree.objects, tree.versions]) await requireOwnDirectory(tree, dir);
}

/** The one top directory (objects/ or versions/) `file` is in or under: a root that is gone took both with it. */
async function requireTopDirectory(tree: Tree, file: string): Promise<void> {
  await requireOwnDirectory(tree, file === tree.versions || file.startsWith(`${tree.versions}${path.sep}`) ? tree.versions : tree.objects);
}

/** Whether `dir` can be listed: opening it and reading its first entries, not the whole of a large one. */
async function probeRead(dir: string): Promise<void> {
  const handle = await opendir(dir);
  try {
    await handle.read();
  } finally {
    await handle.close();
  }
}

/**
 * The preconditions of a write over `key`'s damaged current record: it exists (a create-only write fails), but its
 * etag cannot be read, so only `ifMatch: '*'` matches it. An unconditional write replaces it: that is the repair.
 */
function requireOfDamaged(key: string, opts: Preconditions | undefined): void {
  if (opts?.ifMatch !== undefined && ![opts.ifMatch].flat().includes('*')) {
    throw new PreconditionFailedError(`"${key}" is damaged where it is stored: no etag matches it, only *`);
  }
  requireIfNoneMatch(key, opts?.ifNoneMatch, true);
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

/** The version records among the entries of a key's versions directory: files only, as `list` takes (no symlink). */
function versionRecords(entries: Dirent[]): string[] {
  return entries.filter((entry) => entry.isFile() && isVersionId(entry.name)).map((entry) => entry.name);
}

/** The version ids in a key's versions directory, oldest (smallest) first. */
async function versionIds(dir: string, read: DirectoryReader): Promise<string[]> {
  return versionRecords(await read.entries(dir)).sort();
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
  /** Versions made at once of one key become current in id order (`versions-in-flight.ts`). */
  private readonly versionsInFlight = new VersionsInFlight();

  constructor(options: DiskProviderOptions) {
    this.root = path.resolve(options.root);
    this.fsync = options.fsync;
  }

  async write(key: string, body: Body, opts?: WriteOptions): Promise<ObjectInfo> {
    validateKey(key);
    const described = describeWrite(opts);
    return guarded(async () => {
      const tree = await this.ready();
      const target = path.join(tree.objects, keyPath(key));
      // Before the body too: a refused write neither reads it nor makes a directory.
      await this.checkPreconditions(target, key, opts);
      const record = await this.stage(target, tree.objects, body, described);
      await this.commit(key, record, async () => {
        requireExpectedEtag(key, opts?.expectedEtag, record.trailer.etag);
        // Again where it counts: the object may have changed (or been created) while the body arrived.
        await this.checkPreconditions(target, key, opts);
        await passFence(opts);
        await record.file.publish();
      }, [path.dirname(target), tree.objects]);
      return objectInfo(key, record.trailer);
    }, `write "${key}"`);
  }

  async read(key: string, opts?: ReadOptions): Promise<{ info: ObjectInfo; body: Readable }> {
    validateKey(key);
    return guarded(async () => {
      const { trailer, body } = await readRecord(await this.readablePath(key, opts?.versionId), opts?.range);
      return { info: objectInfo(key, trailer), body };
    }, `read "${key}"`, subjectOf(key, opts?.versionId));
  }

  async stat(key: string, opts?: { versionId?: string }): Promise<ObjectInfo> {
    validateKey(key);
    return guarded(async () => {
      const trailer = await readTrailer(await this.readablePath(key, opts?.versionId));
      return objectInfo(key, trailer);
    }, `stat "${key}"`, subjectOf(key, opts?.versionId));
  }

  async delete(key: string, opts?: DeleteOptions): Promise<void> {
    validateKey(key);
    await this.mutation(key, 'delete', async () => {
      await passFence(opts);
      const tree = await this.ready();
      const object = path.join(tree.objects, keyPath(key));
      if (await this.isReal(object)) {
        await unlink(object).catch(ignoreMissing);
        await this.settleRemoval(path.dirname(object), tree.objects);
      }
      if (opts?.allVersions) {
        const versions = path.join(tree.versions, keyPath(key));
        if (await this.isReal(versions)) {
          // Version records only: a version being staged there now (a temp file) is recorded after this delete.
          for (const id of (await readdir(versions).catch(ignoreMissing)) ?? []) {
            if (isVersionId(id)) await unlink(path.join(versions, id)).catch(ignoreMissing);
          }
          await this.settleRemoval(versions, tree.versions);
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
      const trailers = await mapLimit(found, READ_WIDTH, (entry) => trailerIfReadable(entry.path));
      const items = found.flatMap((entry, i) => (trailers[i] ? [objectInfo(entry.key, trailers[i])] : []));
      return more ? { items, cursor: encodeCursor(found[found.length - 1]!.key) } : { items };
    }, 'list');
  }

  async createVersion(key: string, body: Body, opts: VersionOptions): Promise<VersionInfo> {
    validateKey(key);
    const described = describeWrite(opts);
    return guarded(async () => {
      const target = path.join((await this.ready()).objects, keyPath(key));
      await this.checkPreconditions(target, key, opts);
      return this.recordVersion(key, body, { ...described, message: opts.message, author: opts.author }, opts);
    }, `create a version of "${key}"`);
  }

  async listVersions(key: string, opts?: { cursor?: string; limit?: number }): Promise<Page<VersionInfo>> {
    validateKey(key);
    const limit = pageLimit(opts?.limit);
    const after = decodeVersionsCursor(key, opts?.cursor);
    return guarded(async () => {
      const dir = path.join((await this.ready()).versions, keyPath(key));
      if (!(await this.isReal(dir))) return { items: [] };
      const ids = (await this.versionListings.get(dir, (read) => versionIds(dir, read)).catch(ignoreMissing)) ?? [];
      // Newest first: down from the newest, or from the one just older than the cursor.
      const start = (after === undefined ? ids.length : lowerBoundKey(ids.length, (i) => ids[i]!, after)) - 1;
      const page: string[] = [];
      for (let at = start; at >= 0 && page.length < limit; at--) page.push(ids[at]!);
      const trailers = await mapLimit(page, READ_WIDTH, (id) => trailerIfReadable(path.join(dir, id)));
      const items = trailers.flatMap((trailer) => (trailer ? [versionInfo(key, trailer)] : []));
      return start - limit >= 0 ? { items, cursor: encodeVersionsCursor(key, page[page.length - 1]!) } : { items };
    }, `list the versions of "${key}"`);
  }

  async restoreVersion(key: string, versionId: string, opts?: RestoreOptions): Promise<VersionInfo> {
    validateKey(key);
    const restoring = `restore version "${versionId}" of "${key}"`;
    return guarded(async () => {
      const { trailer, body } = await guarded(
        async () => readRecord(await this.readablePath(key, versionId)),
        restoring,
        subjectOf(key, versionId),
      );
      // Streamed through the hash again: the restored content is verified, not trusted.
      const description = {
        contentType: trailer.contentType,
        metadata: trailer.metadata,
        message: opts?.message ?? `restore ${versionId}`,
        author: opts?.author,
      };
      const restored = this.recordVersion(key, body, description, { ...opts, stored: { etag: trailer.etag, subject: subjectOf(key, versionId) } });
      // This body is the store's own record: a failure reading it is the store's, mapped as any other.
      return restored.catch((error: unknown) => {
        throw error instanceof BodyError ? toStorageError(error.cause, restoring, subjectOf(key, versionId)) : error;
      });
    }, restoring);
  }

  /**
   * Unlinks the version record; a current object made from it is a hard link of its own and keeps the content. Only
   * its directory is checked: unlink removes the name itself, so a symlink planted there goes and its target stays.
   */
  async deleteVersion(key: string, versionId: string): Promise<void> {
    validateKey(key);
    if (!isVersionId(versionId)) return;
    await this.mutation(key, 'delete a version of', async () => {
      const tree = await this.ready();
      const dir = path.join(tree.versions, keyPath(key));
      if (!(await this.isReal(dir))) return;
      const removed = await unlink(path.join(dir, versionId)).then(() => true, ignoreMissing);
      if (removed) await this.settleRemoval(dir, tree.versions);
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
      // The root too: health probes of earlier versions of this code were made there.
      await sweep(tree.root);
      return removed;
    }, 'remove leftovers');
  }

  async stats(): Promise<ProviderStats> {
    return guarded(async () => {
      const tree = await this.ownTree();
      const files: string[] = [];
      for await (const entry of this.walk(tree.objects, '', '', undefined)) files.push(entry.path);
      const damaged: string[] = [];
      const trailers = await mapLimit(files, READ_WIDTH, (file) => trailerIfReadable(file, damaged));
      const present = trailers.filter((trailer) => trailer !== undefined);
      return {
        kind: this.kind,
        objects: present.length,
        bytes: present.reduce((sum, trailer) => sum + trailer.size, 0),
        versions: await this.countVersions(tree.versions),
        // Objects whose record cannot be read (left out of objects and bytes); reads of them fail.
        detail: { root: this.root, fsync: this.fsync, damagedObjects: damaged.length },
      };
    }, 'gather stats');
  }

  /** `degraded` when reads still work but writes do not (a full disk, a read-only mount). */
  async health(): Promise<HealthReport> {
    const started = performance.now();
    const report = (status: HealthReport['status'], detail: string): HealthReport => ({
      status,
      detail,
      latencyMs: performance.now() - started,
    });
    let tree: Tree;
    try {
      tree = await this.ownTree();
      await probeRead(tree.objects);
      await probeRead(tree.versions);
    } catch (error) {
      return report('down', `${this.root}: ${(error as Error).message}`);
    }
    try {
      await probeWritable(tree);
    } catch (error) {
      return report('degraded', `${this.root} is readable, but writes fail: ${(error as Error).message}`);
    }
    return report('ok', `${this.root} is readable and writable`);
  }

  async close(): Promise<void> {
    // Every call opens and closes its own files: nothing is held between calls.
  }

  /** Makes the tree on first use; the root's real path is what every path built later is checked against. */
  private ready(): Promise<Tree> {
    this.tree ??= (async () => {
      await this.makeDirectory(this.root);
      const root = await realpath(this.root);
      const tree = { root, objects: path.join(root, 'objects'), versions: path.join(root, 'versions') };
      for (const dir of [tree.objects, tree.versions]) {
        // Looked at first: mkdir -p passes over a symlink to a directory, and fails on a dangling one as on no root.
        if ((await lstat(dir).catch(ignoreMissing)) === undefined) await this.makeDirectory(dir);
      }
      await requireOwnDirectories(tree);
      return tree;
    })().catch((error: unknown) => {
      this.tree = undefined;
      throw error;
    });
    return this.tree;
  }

  /** The tree, its top directories checked again: for stats and health, which walk them from the top. */
  private async ownTree(): Promise<Tree> {
    const tree = await this.ready();
    await requireOwnDirectories(tree);
    return tree;
  }

  /**
   * `mkdir -p dir`. With fsync, the parent of each directory made is synced too: the write into `dir` syncs only
   * `dir`, which leaves the path to it to chance after a power cut.
   */
  private async makeDirectory(dir: string): Promise<void> {
    const first = await makeDirectories(dir);
    if (first === undefined || !this.fsync) return;
    for (let made = dir; made.length >= first.length; made = path.dirname(made)) await fsyncDirectory(path.dirname(made));
  }

  private atomic(target: string): AtomicWriteOptions {
    return { fsync: this.fsync, onMissingDirectory: () => this.ensureDirectory(path.dirname(target)) };
  }

  /**
   * `fn` under `key`'s lock. Mutations of one key run one at a time in this process, so an `ifMatch` or `ifNoneMatch`
   * check and the rename after it act as one step; processes sharing a root are not serialized (see the README).
   */
  private locked<T>(key: string, fn: () => Promise<T>): Promise<T> {
    return withProcessMutex(`disk:${this.root}:${key}`, fn);
  }

  /** A mutation of `key` under its lock, its errors mapped to the contract's (`operation` names it in them). */
  private mutation<T>(key: string, operation: string, fn: () => Promise<T>): Promise<T> {
    return guarded(() => this.locked(key, fn), `${operation} "${key}"`);
  }

  /**
   * Writes `body` as a record for `target` (below `top`, objects/ or versions/), to a temp file in its directory,
   * made if missing. Outside the key's lock: a slow body holds up no other mutation of the key. A failure prunes the
   * directories it made.
   */
  private async stage(target: string, top: string, body: Body, description: RecordDescription): Promise<StagedRecord> {
    try {
      await this.writableDirectory(target);
      return await stageRecord(target, body, description, this.atomic(target));
    } catch (error) {
      await this.pruneAfterFailure([path.dirname(target), top]);
      throw error;
    }
  }

  /**
   * Runs `step` (the precondition check and the rename or link that make `record` visible) under `key`'s lock. A
   * failure discards the record and prunes the directories it left empty (see `pruneAfterFailure`).
   */
  private async commit(key: string, record: StagedRecord, step: () => Promise<void>, ...dirs: MadeDirectory[]): Promise<void> {
    try {
      await this.locked(key, step);
    } catch (error) {
      await record.file.discard();
      await this.pruneAfterFailure(...dirs);
      throw error;
    }
  }

  /** After a failed write: removes the directories it left empty. */
  private async pruneAfterFailure(...dirs: MadeDirectory[]): Promise<void> {
    for (const [dir, top] of dirs) {
      // Only a real directory: rmdir would follow a symlink on the way (why a write may fail) out of the store.
      if (await this.isReal(dir).catch(() => false)) await this.pruneEmpty(dir, top);
    }
  }

  /**
   * True when `file` exists and its real path is the one built from the key; false when it does not exist (and the
   * store's directories do). Anything else means a symlink (or `..` trick) below the root.
   */
  private async isReal(file: string): Promise<boolean> {
    let real: string;
    try {
      real = await realpath(file);
    } catch (error) {
      if (!isMissing(error)) throw error;
      // Absent, unless the store's own directory it would be under is what is missing (one lstat: a root that is gone
      // took objects/ and versions/ with it).
      await requireTopDirectory(await this.ready(), file);
      return false;
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
      if (existing !== dir) await this.makeDirectory(dir);
    });
  }

  /**
   * Makes the directory of `file` (where a write lands) and checks it is real. The file itself is not checked: a write
   * renames a new file over it, which replaces a symlink there instead of following it (and checking would cost a
   * failed lookup for every new key).
   */
  private async writableDirectory(file: string): Promise<void> {
    const dir = path.dirname(file);
    if (!(await this.isReal(dir))) await this.ensureDirectory(dir);
  }

  private async readablePath(key: string, versionId: string | undefined): Promise<string> {
    const tree = await this.ready();
    if (versionId !== undefined && !isVersionId(versionId)) throw new NotFoundError(`no ${subjectOf(key, versionId)}`);
    const file =
      versionId === undefined ? path.join(tree.objects, keyPath(key)) : path.join(tree.versions, keyPath(key), versionId);
    if (!(await this.isReal(file))) throw new NotFoundError(`no ${subjectOf(key, versionId)}`);
    return file;
  }

  /**
   * `ifMatch` and `ifNoneMatch`, without creating anything: a missing directory on the way is a missing object, which
   * no `ifMatch` matches and every `ifNoneMatch` does.
   */
  private async checkPreconditions(target: string, key: string, opts: Preconditions | undefined): Promise<void> {
    if (!hasPreconditions(opts)) return;
    let current: RecordTrailer | undefined;
    try {
      current = (await this.isReal(target)) ? await trailerIfPresent(target) : undefined;
    } catch (error) {
      if (!(error instanceof DamagedRecordError)) throw error;
      requireOfDamaged(key, opts);
      return;
    }
    requirePreconditions(key, opts, current?.etag);
  }

  /**
   * Stages a version record, makes it the current object (a hard link: the content is written once), then lists it
   * (the rename into versions/). In this order a failure or crash between the two never lists a version that is not
   * current (see the top of this file); one whose turn was skipped (`versions-in-flight.ts`) is listed all the same.
   * `stored`: the body is a record of this store (a restore), whose content must hash to the etag it was stored
   * with; a record too large to be checked as it was read (see disk-record.ts) is checked here.
   */
  private async recordVersion(
    key: string,
    body: Body,
    description: { contentType: string; metadata: Record<string, string>; message: string; author?: VersionOptions['author'] },
    guards?: Preconditions & Fenced & Pick<WriteOptions, 'expectedEtag'> & { stored?: { etag: string; subject: string } },
  ): Promise<VersionInfo> {
    const tree = await this.ready();
    const target = path.join(tree.objects, keyPath(key));
    const versionsDir = path.join(tree.versions, keyPath(key));
    await this.mintAfterStored(versionsDir);
    return this.versionsInFlight.track(key, async (versionId, makeCurrent) => {
      const file = path.join(versionsDir, versionId);
      const record = await this.stage(file, tree.versions, body, { ...description, versionId });
      await this.commit(
        key,
        record,
        async () => {
          requireExpectedEtag(key, guards?.expectedEtag, record.trailer.etag);
          if (guards?.stored !== undefined && guards.stored.etag !== record.trailer.etag) {
            throw new DataCorruptedError(`the stored ${guards.stored.subject} is damaged: its content does not match its etag`);
          }
          await this.checkPreconditions(target, key, guards);
          await passFence(guards);
          await this.writableDirectory(target);
          await makeCurrent(() => record.file.linkTo(target, this.atomic(target)));
          await record.file.publish();
        },
        [path.dirname(file), tree.versions],
        [path.dirname(target), tree.objects],
      );
      return versionInfo(key, record.trailer);
    });
  }

  /**
   * Version ids carry the clock of the process that minted them. A version left by a process whose clock ran ahead
   * (an NTP step back since, a root copied from another host) would otherwise sort above the one made now, and the
   * newest version would list as older than it is.
   */
  private async mintAfterStored(dir: string): Promise<void> {
    const ids = await this.versionListings.get(dir, (read) => versionIds(dir, read)).catch(ignoreMissing);
    const newest = ids?.at(-1);
    if (newest !== undefined) mintAfter(newest);
  }

  /**
   * Removes empty directories from `dir` up to (not including) `top`; a directory in use stops it. Returns the
   * deepest directory left, the last whose entries changed.
   */
  private async pruneEmpty(dir: string, top: string): Promise<string> {
    let current = dir;
    for (; current !== top && current.startsWith(top); current = path.dirname(current)) {
      try {
        await rmdir(current);
      } catch {
        return current;
      }
    }
    return current;
  }

  /**
   * After records in `dir` were unlinked: prunes the directories left empty and, with fsync, syncs the one whose
   * entries changed last (`dir`, or the parent of the topmost one pruned), so that the delete survives a power cut.
   */
  private async settleRemoval(dir: string, top: string): Promise<void> {
    const changed = await this.pruneEmpty(dir, top);
    // Gone meanwhile: a concurrent delete pruned it, and syncs its parent itself.
    if (this.fsync) await fsyncDirectory(changed).catch(ignoreMissing);
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
      if (!isMissing(error)) throw error;
      await requireTopDirectory(await this.ready(), dir); // a directory a delete pruned, not the store's own gone
      return;
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
      if (!dirent.name.endsWith('~')) count += await this.countVersions(child);
      else count += versionRecords((await readdir(child, { withFileTypes: true }).catch(ignoreMissing)) ?? []).length;
    }
    return count;
  }
}
