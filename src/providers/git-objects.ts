/**
 * The git object database and refs of one repository, as the git provider needs them: read any object (loose
 * ones here, packed ones through isomorphic-git, so a `git gc` by anyone keeps working), write loose objects,
 * edit a tree along the changed paths only, encode commits, and move a branch with compare-and-swap.
 *
 * Why not isomorphic-git's own write path: measured here, `writeBlob` costs 1.9 ms and `writeTree` of a
 * 2,000-entry tree 8 ms (web CompressionStream per object, async SHA-1), and it writes a loose object in place,
 * so a crash mid-write leaves a torn object that it never rewrites (it skips files that exist). Here an object is
 * written to a temp file and renamed (git's own way), with node's zlib: 0.3–1 ms per object, all the objects
 * of a commit in parallel. Refs are moved the way git moves them: `<ref>.lock` created exclusively, the old value
 * compared, the new one renamed into place, so git CLI writers and this provider exclude each other.
 *
 * Tree entry names are kept as byte strings (latin1: one char per byte) so a name git stored in any encoding
 * survives a rewrite byte for byte, and JS string order equals git's byte order.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { link, open, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import * as isogit from 'isomorphic-git';
import { fsyncDirectory, makeDirectories } from './atomic-file.js';
import { DataCorruptedError, InvalidArgumentError, PermissionDeniedError, ProviderUnavailableError } from './errors.js';
import { isObjectId } from './git-layout.js';

export type ObjectType = 'blob' | 'tree' | 'commit' | 'tag';

export const EMPTY_TREE = '4b825dc642cb6eb9a060e54bf8d69288fbee4904';
const TREE_MODE = '40000';
const FILE_MODE = '100644';
/**
 * Above these, zlib runs on the thread pool: the event loop stays free, and the big trees of a commit chain
 * (a 2,500-entry directory is ~100 KiB) compress in parallel (measured: deflate was 28 % of a chain's CPU).
 */
const ASYNC_INFLATE_BYTES = 512 * 1024;
const ASYNC_DEFLATE_BYTES = 32 * 1024;
/** Content up to this size is read with a synchronous call. */
const SMALL_OBJECT_BYTES = 64 * 1024;
/** Longest stretch synchronous reads keep the event loop to themselves. */
const HOLD_LOOP_MS = 10;
/** A ref lock untouched this long was left by a crashed process (see `createRefLock`). */
const STALE_LOCK_MS = 10_000;
const inflateAsync = promisify(zlib.inflate);
const deflateAsync = promisify(zlib.deflate);

export interface EncodedObject {
  oid: string;
  type: ObjectType;
  content: Buffer;
}

export interface TreeEntry {
  /** As stored: `40000` for trees, `100644` for files. */
  mode: string;
  /** Byte string (latin1). */
  name: string;
  oid: string;
  /**
   * The entry's bytes in a tree object (`<mode> <name>\0<20-byte oid>`), kept from parsing: re-encoding a
   * 2,500-entry directory after a one-entry edit is then a copy, not 2,500 string encodings.
   */
  encoded?: Buffer;
}

export interface Identity {
  name: string;
  email: string;
  /** Seconds since the epoch. */
  timestamp: number;
  /** Minutes east of UTC. */
  timezoneOffset: number;
}

export interface CommitObject {
  tree: string;
  parents: string[];
  author: Identity;
  committer: Identity;
  message: string;
}

/**
 * Node's size limits (a file over 2 GiB read at once, a buffer, string or hash input too long): an object too large
 * to be held whole, written by git itself or before the store's limit; it stays too large, so no retry helps. Only
 * these codes: another RangeError is a defect, not a size.
 */
const TOO_LARGE_CODES = new Set(['ERR_FS_FILE_TOO_LARGE', 'ERR_BUFFER_TOO_LARGE', 'ERR_STRING_TOO_LONG', 'ERR_OUT_OF_RANGE']);

export function isTooLargeToHold(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code !== undefined && TOO_LARGE_CODES.has(code);
}

export function isTreeMode(mode: string): boolean {
  return mode === TREE_MODE || mode === '040000';
}

export function isTree(entry: TreeEntry): boolean {
  return isTreeMode(entry.mode);
}

/** A file's entry (regular, executable, symlink): what a key's content can be. A submodule's (160000) names a commit. */
function isFileMode(mode: string): boolean {
  return mode.startsWith('100') || mode === '120000';
}

export function toByteString(name: string): string {
  return Buffer.from(name, 'utf8').toString('latin1');
}

export function fromByteString(name: string): string {
  return Buffer.from(name, 'latin1').toString('utf8');
}

export function encodeObject(type: ObjectType, content: Buffer): EncodedObject {
  const hash = createHash('sha1');
  hash.update(`${type} ${content.length}\0`);
  hash.update(content);
  return { oid: hash.digest('hex'), type, content };
}

/** git's tree order: names compared byte-wise, a tree's name as if it ended in '/'. */
function sortName(entry: TreeEntry): string {
  return isTree(entry) ? `${entry.name}/` : entry.name;
}

function encodeEntry(entry: TreeEntry): Buffer {
  if (entry.encoded) return entry.encoded;
  const bytes = Buffer.allocUnsafe(entry.mode.length + 1 + entry.name.length + 1 + 20);
  let at = bytes.write(entry.mode, 0, 'latin1');
  bytes[at++] = 0x20;
  at += bytes.write(entry.name, at, 'latin1');
  bytes[at++] = 0;
  bytes.write(entry.oid, at, 'hex');
  entry.encoded = bytes;
  return bytes;
}

export function encodeTree(entries: readonly TreeEntry[]): EncodedObject {
  return encodeObject('tree', Buffer.concat(entries.map(encodeEntry)));
}

export function parseTree(content: Buffer): TreeEntry[] {
  const entries: TreeEntry[] = [];
  let at = 0;
  while (at < content.length) {
    const space = content.indexOf(0x20, at);
    const nul = content.indexOf(0, space);
    if (space < 0 || nul < 0 || nul + 21 > content.length) throw new Error('corrupt tree object');
    entries.push({
      mode: content.toString('latin1', at, space),
      name: content.toString('latin1', space + 1, nul),
      oid: content.toString('hex', nul + 1, nul + 21),
      encoded: content.subarray(at, nul + 21),
    });
    at = nul + 21;
  }
  return entries;
}

function formatIdentity(identity: Identity): string {
  const offset = identity.timezoneOffset;
  const sign = offset < 0 ? '-' : '+';
  const hours = String(Math.floor(Math.abs(offset) / 60)).padStart(2, '0');
  const minutes = String(Math.abs(offset) % 60).padStart(2, '0');
  return `${identity.name} <${identity.email}> ${identity.timestamp} ${sign}${hours}${minutes}`;
}

function parseIdentity(value: string): Identity {
  // `s`: a name may hold U+2028 or U+2029, which `.` does not match without it.
  const match = /^(.*?) ?<([^>]*)> (\d+) ([+-])(\d\d)(\d\d)$/s.exec(value);
  if (!match) return { name: value, email: '', timestamp: 0, timezoneOffset: 0 };
  const offset = Number(match[5]) * 60 + Number(match[6]);
  return { name: match[1]!, email: match[2]!, timestamp: Number(match[3]), timezoneOffset: match[4] === '-' ? -offset : offset };
}

export function encodeCommit(commit: CommitObject): EncodedObject {
  const lines = [`tree ${commit.tree}`];
  for (const parent of commit.parents) lines.push(`parent ${parent}`);
  lines.push(`author ${formatIdentity(commit.author)}`, `committer ${formatIdentity(commit.committer)}`, '', commit.message);
  return encodeObject('commit', Buffer.from(lines.join('\n'), 'utf8'));
}

export function parseCommit(content: Buffer): CommitObject {
  const text = content.toString('utf8');
  const split = text.indexOf('\n\n');
  const header = split < 0 ? text : text.slice(0, split);
  const commit: CommitObject = {
    tree: '',
    parents: [],
    author: parseIdentity(''),
    committer: parseIdentity(''),
    message: split < 0 ? '' : text.slice(split + 2),
  };
  for (const line of header.split('\n')) {
    if (line.startsWith(' ')) continue; // continuation of a multi-line header (gpgsig, mergetag)
    const space = line.indexOf(' ');
    const name = line.slice(0, space);
    const value = line.slice(space + 1);
    if (name === 'tree') commit.tree = value;
    else if (name === 'parent') commit.parents.push(value);
    else if (name === 'author') commit.author = parseIdentity(value);
    else if (name === 'committer') commit.committer = parseIdentity(value);
  }
  if (!/^[0-9a-f]{40}$/.test(commit.tree)) throw new Error('corrupt commit object');
  return commit;
}

/** A least-recently-used map bounded by the summed weight of its values. */
class LruCache<V> {
  private readonly map = new Map<string, { value: V; weight: number }>();
  private total = 0;

  constructor(private readonly maxWeight: number) {}

  get(key: string): V | undefined {
    const hit = this.map.get(key);
    if (!hit) return undefined;
    this.map.delete(key);
    this.map.set(key, hit);
    return hit.value;
  }

  set(key: string, value: V, weight = 1): void {
    const old = this.map.get(key);
    if (old) {
      this.total -= old.weight;
      this.map.delete(key);
    }
    this.map.set(key, { value, weight });
    this.total += weight;
    for (const [oldest, entry] of this.map) {
      if (this.total <= this.maxWeight || this.map.size === 1) break;
      this.map.delete(oldest);
      this.total -= entry.weight;
    }
  }
}

/** Objects built for a commit that is not written yet: tree edits read them back before they reach disk. */
export type Staging = Map<string, EncodedObject>;

export interface TreeEdit {
  /** Byte-string segments. */
  path: string[];
  /** A blob to place there, or null to remove the file. */
  oid: string | null;
}

/** No object of the wanted type under that id (missing, or another type: a blob id given as a commit). */
export class MissingObjectError extends Error {
  constructor(
    readonly oid: string,
    readonly wanted?: ObjectType,
    found?: ObjectType,
  ) {
    super(found ? `git object ${oid} is a ${found}, not a ${wanted}` : `git object ${oid} is missing`);
  }
}

export class ObjectStore {
  /** Parsed trees, weighed by their entry count (a 2,000-entry root tree is ~100 KiB of JS objects). */
  private readonly trees = new LruCache<readonly TreeEntry[]>(200_000);
  private readonly commits = new LruCache<CommitObject>(20_000);
  private readonly fanoutDirs = new Set<string>();
  /** isomorphic-git's packfile cache. */
  private readonly packCache = {};
  /** When the event loop last had a turn, as far as `read` knows. */
  private turn = performance.now();
  private nextTurn: Promise<void> | undefined;

  constructor(
    readonly gitdir: string,
    private readonly fsync: boolean,
  ) {}

  /**
   * `small`: the object is known to be small (trees, commits, records, small content), and is read with one
   * synchronous call: a page-cached loose object costs ~20 µs that way against four thread-pool round trips
   * (open, fstat, read, close) with `fs.promises` (replaying 2,000 commits: 1.1 s instead of 3.4 s). Awaiting
   * them is microtasks only, so a long run of them (a replay of 1,000 commits: 3 s) gives the event loop a turn
   * every `HOLD_LOOP_MS`.
   */
  async read(oid: string, staging?: Staging, small = false): Promise<{ type: ObjectType; content: Buffer }> {
    const staged = staging?.get(oid);
    if (staged) return staged;
    if (oid === EMPTY_TREE) return { type: 'tree', content: Buffer.alloc(0) };
    if (small) await this.giveTurn();
    let file: Buffer;
    try {
      file = small ? fs.readFileSync(this.loosePath(oid)) : await readFile(this.loosePath(oid));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      return this.readPacked(oid);
    }
    let raw: Buffer;
    try {
      raw = file.length > ASYNC_INFLATE_BYTES ? await inflateAsync(file) : zlib.inflateSync(file);
    } catch (error) {
      // Objects are renamed into place whole: one that does not inflate was damaged on disk (a torn write, a bad
      // sector), and reading it again gives the same. One too large to inflate into memory is not damaged.
      if (!String((error as { code?: unknown }).code ?? '').startsWith('Z_')) throw error;
      throw new DataCorruptedError(`git object ${oid} is damaged (it does not inflate)`, { cause: error });
    }
    const space = raw.indexOf(0x20);
    const nul = raw.indexOf(0, space);
    const type = raw.toString('latin1', 0, space) as ObjectType;
    const size = Number(raw.toString('latin1', space + 1, nul));
    if (space < 0 || nul < 0 || raw.length - nul - 1 !== size) throw new DataCorruptedError(`git object ${oid} is damaged (its header and size disagree)`);
    return { type, content: raw.subarray(nul + 1) };
  }

  /** Concurrent readers wait for one turn together: each waiting for its own, each would hold the loop again. */
  private giveTurn(): Promise<void> | undefined {
    if (performance.now() - this.turn < HOLD_LOOP_MS) return undefined;
    this.nextTurn ??= new Promise((resolve) => {
      setImmediate(() => {
        this.turn = performance.now();
        this.nextTurn = undefined;
        resolve();
      });
    });
    return this.nextTurn;
  }

  private async readPacked(oid: string): Promise<{ type: ObjectType; content: Buffer }> {
    try {
      const result = await isogit.readObject({ fs, gitdir: this.gitdir, oid, format: 'content', cache: this.packCache });
      return { type: result.type as ObjectType, content: Buffer.from(result.object as Uint8Array) };
    } catch (error) {
      if ((error as { code?: string }).code === 'NotFoundError') throw new MissingObjectError(oid);
      throw error;
    }
  }

  private async readTyped(oid: string, type: ObjectType, staging?: Staging, small = true): Promise<Buffer> {
    const object = await this.read(oid, staging, small);
    if (object.type !== type) throw new MissingObjectError(oid, type, object.type);
    return object.content;
  }

  /** `size`, when known, lets a small blob be read synchronously (see `read`). */
  readBlob(oid: string, size?: number): Promise<Buffer> {
    return this.readTyped(oid, 'blob', undefined, size !== undefined && size <= SMALL_OBJECT_BYTES);
  }

  async readTree(oid: string, staging?: Staging): Promise<readonly TreeEntry[]> {
    const cached = this.trees.get(oid);
    if (cached) return cached;
    const entries = parseTree(await this.readTyped(oid, 'tree', staging));
    this.trees.set(oid, entries, entries.length + 1);
    return entries;
  }

  async readCommit(oid: string, staging?: Staging): Promise<CommitObject> {
    const cached = this.commits.get(oid);
    if (cached) return cached;
    const commit = parseCommit(await this.readTyped(oid, 'commit', staging));
    this.commits.set(oid, commit);
    return commit;
  }

  /** The blob at `segments` (byte strings) below `tree`, or undefined when there is no file there. */
  async blobAt(tree: string, segments: readonly string[], staging?: Staging): Promise<string | undefined> {
    let current = tree;
    for (let i = 0; i < segments.length; i++) {
      const last = i === segments.length - 1;
      const entry = (await this.readTree(current, staging)).find(
        (candidate) => candidate.name === segments[i] && (last ? isFileMode(candidate.mode) : isTree(candidate)),
      );
      if (!entry) return undefined;
      current = entry.oid;
    }
    return current;
  }

  /**
   * Applies `edits` to `tree` and stages every new tree; subtrees off the edited paths are reused as they are.
   * Returns the new root (the empty tree when nothing is left).
   */
  async editTree(tree: string | undefined, edits: readonly TreeEdit[], staging: Staging): Promise<string> {
    const root = await this.editLevel(tree, edits, staging);
    if (root !== undefined) return root;
    staging.set(EMPTY_TREE, encodeObject('tree', Buffer.alloc(0)));
    return EMPTY_TREE;
  }

  private async editLevel(tree: string | undefined, edits: readonly TreeEdit[], staging: Staging): Promise<string | undefined> {
    const entries = tree === undefined ? [] : [...(await this.readTree(tree, staging))];
    const byName = new Map<string, TreeEdit[]>();
    for (const edit of edits) {
      const [name, ...rest] = edit.path;
      if (name === undefined) continue;
      const group = byName.get(name) ?? [];
      group.push({ path: rest, oid: edit.oid });
      byName.set(name, group);
    }
    for (const [name, group] of byName) {
      const file = group.find((edit) => edit.path.length === 0);
      const current = entries[findEntry(entries, name)];
      // The store's files end with `~` and its directories never do (git-layout.ts): an entry of the other kind
      // under the name (a clone's Makefile), or one that is neither (a submodule), is the repository's own, which a
      // key's write must not replace.
      if (current !== undefined && (file !== undefined ? !isFileMode(current.mode) : !isTree(current))) {
        const shown = Buffer.from(name, 'latin1').toString('utf8');
        throw new PermissionDeniedError(`the key's path is taken by "${shown}", an entry of the repository the store did not make`);
      }
      if (file) {
        removeEntry(entries, name);
        if (file.oid !== null) insertEntry(entries, { mode: FILE_MODE, name, oid: file.oid });
        continue;
      }
      const subtree = await this.editLevel(current?.oid, group, staging); // a tree, or none: checked above
      removeEntry(entries, name);
      if (subtree !== undefined) insertEntry(entries, { mode: TREE_MODE, name, oid: subtree });
    }
    if (entries.length === 0) return undefined;
    const encoded = encodeTree(entries);
    staging.set(encoded.oid, encoded);
    this.trees.set(encoded.oid, entries, entries.length + 1);
    return encoded.oid;
  }

  /**
   * Writes loose objects (in parallel, each atomically); objects already loose on disk are skipped. With fsync, the
   * directories holding them are then synced, once each: a rename survives a power cut only with its directory, and
   * the ref that names these objects moves after this returns. One already there is synced too: it may be another
   * writer's, renamed but not synced yet.
   */
  async write(objects: Iterable<EncodedObject>): Promise<void> {
    const unique = new Map<string, EncodedObject>();
    for (const object of objects) unique.set(object.oid, object);
    const dirs = new Set<string>();
    await Promise.all([...unique.values()].map((object) => this.writeLoose(object, dirs)));
    if (this.fsync) await Promise.all([...dirs].map(fsyncDirectory));
  }

  private loosePath(oid: string): string {
    return path.join(this.gitdir, 'objects', oid.slice(0, 2), oid.slice(2));
  }

  /**
   * No memory of objects written before: one no ref reaches yet (its commit failed) can be pruned by `git gc`
   * at any time, so only a copy on disk now counts. A packed object gets a loose duplicate, which git tolerates.
   */
  private async writeLoose(object: EncodedObject, dirs: Set<string>): Promise<void> {
    const target = this.loosePath(object.oid);
    const dir = path.dirname(target);
    dirs.add(dir);
    // Synchronous and without an exception for the common "not there yet": both cost more than the check.
    if (fs.statSync(target, { throwIfNoEntry: false })) {
      try {
        // Renewed as git does (freshen_loose_object): gc prunes unreachable objects by age, and this one may be
        // an old leftover that our commit is about to make reachable.
        const now = new Date();
        fs.utimesSync(target, now, now);
        return;
      } catch {
        // pruned since the stat, or not ours to touch: write a fresh copy
      }
    }
    const raw = Buffer.concat([Buffer.from(`${object.type} ${object.content.length}\0`, 'latin1'), object.content]);
    // Level 1: most content is small text; git's default (level 6 via core.compression -1) costs 3x the CPU here.
    const compressed = raw.length > ASYNC_DEFLATE_BYTES ? await deflateAsync(raw, { level: 1 }) : zlib.deflateSync(raw, { level: 1 });
    const temp = path.join(dir, `tmp_obj_${randomBytes(6).toString('hex')}`);
    if (!this.fanoutDirs.has(dir)) await makeFanout(dir, dirs);
    try {
      await writeFileExclusive(temp, compressed, this.fsync, 0o444);
    } catch (error) {
      // `git gc` / `git prune` remove fan-out directories they emptied.
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      await makeFanout(dir, dirs);
      await writeFileExclusive(temp, compressed, this.fsync, 0o444);
    }
    this.fanoutDirs.add(dir);
    try {
      await rename(temp, target);
    } catch (error) {
      await unlink(temp).catch(() => {});
      throw error;
    }
  }

  // ---- refs ----

  /** The object a ref (`refs/heads/main`) points at, following symbolic refs; undefined when it does not exist. */
  async resolveRef(ref: string, depth = 0): Promise<string | undefined> {
    let value: string;
    try {
      value = (await readFile(path.join(this.gitdir, ref), 'utf8')).trim();
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR' && code !== 'EISDIR') throw error;
      return (await this.packedRefs()).get(ref);
    }
    if (value.startsWith('ref: ') && depth < 5) return this.resolveRef(value.slice(5).trim(), depth + 1);
    if (!isObjectId(value)) {
      // A writer truncates nothing (refs are renamed into place), so this is a foreign or damaged file.
      throw new ProviderUnavailableError(`git ref ${ref} holds ${JSON.stringify(value.slice(0, 60))}, not an object id`);
    }
    return value;
  }

  /**
   * A symbolic ref (`ref: refs/heads/main`) is refused as a commit's target: renamed into place, the commit id would
   * replace the link and leave the branch it named behind (`GIT_BRANCH` is checked at open; a write's `branch` here).
   */
  private async refuseSymbolicRef(ref: string): Promise<void> {
    const value = await readFile(path.join(this.gitdir, ref), 'utf8').catch(() => '');
    if (!value.startsWith('ref: ')) return;
    throw new InvalidArgumentError(`git ref ${ref} is a symbolic ref to ${value.slice(5).trim()}: commit to the branch it names`);
  }

  private async packedRefs(): Promise<Map<string, string>> {
    const refs = new Map<string, string>();
    let text: string;
    try {
      text = await readFile(path.join(this.gitdir, 'packed-refs'), 'utf8');
    } catch {
      return refs;
    }
    for (const line of text.split('\n')) {
      const match = /^([0-9a-f]{40}) (.+)$/.exec(line);
      if (match) refs.set(match[2]!, match[1]!);
    }
    return refs;
  }

  /**
   * Moves `ref` from `expected` (undefined: the ref must not exist yet) to `next`. False when the ref holds
   * something else: the caller lost a race and must rebuild on the new value.
   */
  async updateRef(ref: string, next: string, expected: string | undefined): Promise<boolean> {
    const target = path.join(this.gitdir, ref);
    const lock = `${target}.lock`;
    await makeDirectories(path.dirname(target));
    // Open until the end: while it is, no other file can have its inode, so comparing inodes proves the lock ours.
    const handle = await this.createRefLock(lock);
    let moved = false;
    try {
      await this.refuseSymbolicRef(ref);
      if ((await this.resolveRef(ref)) !== expected) return false;
      await handle.writeFile(`${next}\n`);
      if (this.fsync) await handle.datasync();
      // Left open: a remover that saw an older stale lock taking ours aside, and a third writer locking anew, both
      // between this check and the rename (two system calls); no system call renames a file only if it is a given one.
      if (!(await holdsLock(lock, handle))) throw new ProviderUnavailableError(`git ref lock ${lock} was taken away while held`);
      await rename(lock, target);
      moved = true;
      // The commit is acknowledged once this returns: its rename must survive a power cut as the objects' did.
      if (this.fsync) await fsyncDirectory(path.dirname(target));
      return true;
    } finally {
      if (!moved) await releaseLock(lock, handle).catch(() => {});
      await handle.close().catch(() => {});
    }
  }

  /**
   * git's ref lock. Another holder (a git CLI command) keeps it for milliseconds; one that stays past 10 s was left
   * by a crashed process, and is removed, as `git` itself would ask a human to do.
   */
  private async createRefLock(lock: string): Promise<fs.promises.FileHandle> {
    const deadline = Date.now() + 5_000;
    for (let attempt = 0; ; attempt++) {
      try {
        return await open(lock, 'wx');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
      const held = await stat(lock).catch(() => undefined);
      if (held && isStaleLock(held)) {
        // Another writer may have removed this one and locked anew since the stat: only the stale file may go.
        await removeLockIf(lock, (file) => sameFile(file, held) && isStaleLock(file));
        continue;
      }
      if (Date.now() > deadline) throw new ProviderUnavailableError(`git ref lock ${lock} is held by another process`);
      await new Promise((resolve) => setTimeout(resolve, Math.min(50, 2 ** attempt)));
    }
  }

  /** Branch names (without `refs/heads/`), loose and packed. */
  async listBranches(): Promise<string[]> {
    const names = new Set<string>();
    const headsDir = path.join(this.gitdir, 'refs', 'heads');
    const walk = async (dir: string, prefix: string): Promise<void> => {
      let entries: fs.Dirent[];
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch {
        return;
      }
      for (const entry of entries) {
        if (entry.isDirectory()) await walk(path.join(dir, entry.name), `${prefix}${entry.name}/`);
        else if (!entry.name.endsWith('.lock')) names.add(`${prefix}${entry.name}`);
      }
    };
    await walk(headsDir, '');
    for (const ref of (await this.packedRefs()).keys()) if (ref.startsWith('refs/heads/')) names.add(ref.slice('refs/heads/'.length));
    return [...names].sort();
  }
}

function isStaleLock(file: fs.Stats): boolean {
  return Date.now() - file.mtimeMs > STALE_LOCK_MS;
}

function sameFile(a: fs.Stats, b: fs.Stats): boolean {
  return a.ino === b.ino && a.dev === b.dev;
}

/** Whether the file at `lock` is still the one `handle` created (a stale-lock remover may have taken it). */
async function holdsLock(lock: string, handle: fs.promises.FileHandle): Promise<boolean> {
  const [mine, there] = await Promise.all([handle.stat(), stat(lock).catch(() => undefined)]);
  return there !== undefined && sameFile(there, mine);
}

/** Removes the lock `handle` created, and never a lock someone else holds now. */
async function releaseLock(lock: string, handle: fs.promises.FileHandle): Promise<void> {
  const mine = await handle.stat();
  await removeLockIf(lock, (file) => sameFile(file, mine));
}

/**
 * Removes the file at `lock` if `owned` accepts it. No call removes a path knowing which file it removed, so the
 * file is first renamed to a name no one else uses and checked there. One that is not `owned` goes back with
 * `link`, which fails rather than replace a lock made meanwhile; its holder then finds its lock gone (`holdsLock`,
 * or its rename fails) and gives up instead of moving the ref.
 */
async function removeLockIf(lock: string, owned: (file: fs.Stats) => boolean): Promise<void> {
  // Still ending in `.lock`: git and listBranches take it for no ref.
  const aside = `${lock.slice(0, -'.lock'.length)}.${randomBytes(6).toString('hex')}.lock`;
  try {
    await rename(lock, aside);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  try {
    if (!owned(await stat(aside))) await link(aside, lock).catch(() => {});
  } finally {
    await unlink(aside);
  }
}

/** Makes the fan-out directory `dir` when missing; `objects/` then gained an entry, and joins the `dirs` to sync. */
async function makeFanout(dir: string, dirs: Set<string>): Promise<void> {
  if ((await makeDirectories(dir)) !== undefined) dirs.add(path.dirname(dir));
}

async function writeFileExclusive(file: string, bytes: Uint8Array, fsync: boolean, mode: number): Promise<void> {
  const handle = await open(file, 'wx', mode);
  try {
    await handle.writeFile(bytes);
    if (fsync) await handle.datasync();
  } finally {
    await handle.close();
  }
}

function findEntry(entries: readonly TreeEntry[], name: string): number {
  return entries.findIndex((entry) => entry.name === name);
}

function removeEntry(entries: TreeEntry[], name: string): void {
  const at = findEntry(entries, name);
  if (at >= 0) entries.splice(at, 1);
}

function insertEntry(entries: TreeEntry[], entry: TreeEntry): void {
  const key = sortName(entry);
  let low = 0;
  let high = entries.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (sortName(entries[mid]!) < key) low = mid + 1;
    else high = mid;
  }
  entries.splice(low, 0, entry);
}

/** `git init --bare` through isomorphic-git, then the settings that differ from git's for a bare repository. */
export async function initRepository(gitdir: string, branch: string): Promise<void> {
  await isogit.init({ fs, gitdir, bare: true, defaultBranch: branch });
  // isomorphic-git writes ignorecase/symlinks/filemode for a work tree on a case-insensitive disk; a bare store
  // has no work tree and its paths are case-sensitive keys.
  for (const [name, value] of [
    ['core.ignorecase', false],
    ['core.symlinks', true],
    ['core.filemode', true],
  ] as const) {
    await isogit.setConfig({ fs, gitdir, path: name, value });
  }
}
