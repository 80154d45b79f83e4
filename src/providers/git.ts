/**
 * The git provider: a store is a git repository (bare at `GIT_REPO_PATH`, or the `.git` of an existing clone,
 * linked worktree or submodule, whose work tree is never touched: `git-repository.ts`) and every mutation is a real commit on `GIT_BRANCH`:
 * `write` ("write <key>"), `createVersion` (its message and author), `restoreVersion` ("restore <id>" by
 * default) and `delete` ("delete <key>", a commit removing the file). Versioning is `every-write`: a key's
 * versions are the commits that wrote it, newest first, and a version id is a commit id.
 *
 * - Layout (keys -> tree paths, the per-key record beside them): `git-layout.ts`. Inspect a store with git:
 *   `git --git-dir=REPO --literal-pathspecs log --first-parent --format=%H --diff-filter=AM BRANCH -- 'docs/a.md~' '.kyozo/meta/docs/a.md~'`
 *   lists exactly `listVersions('docs/a.md')` (first parents only, as the index walks: without it a merge's side
 *   commits show instead of the merge); `git --git-dir=REPO show <versionId>:docs/a.md~` prints that version.
 * - Commits are built from objects, never through a work tree: blob, then the trees along the changed paths
 *   (unchanged subtrees are reused by id), then the commit, then a compare-and-swap of the branch ref
 *   (`git-objects.ts`). The cost of a commit follows the depth and width of the changed directories, not the
 *   length of the history.
 * - Commits are serialized per repository (`git-lock.ts`). Mutations that queue up while a commit is being made
 *   are committed together as a chain: each still gets its own commit, but the objects of the chain are written in
 *   parallel and the ref moves once.
 * - The per-key index (`git-index.ts`) answers listVersions, stat, list and reads at a version from memory; it is
 *   rebuilt from history when missing or stale.
 * - `delete(key, { allVersions: true })` cannot rewrite history (other clones, signed commits): it commits the
 *   removal with a `Kyozo-Forget-Versions: "<key>"` trailer (the key as a JSON string), and the index drops the
 *   key's versions, so listVersions is empty and old version ids read as not found. The commits stay in git
 *   (`git log` still shows them) until someone rewrites the history on purpose.
 * - Content is buffered in memory on its way in and out (git objects carry their size up front), so a body is at
 *   most `GIT_MAX_OBJECT_BYTES` (1 GiB); large bodies are hashed and compressed before the lock is taken.
 */
import { createHash } from 'node:crypto';
import { realpath } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { Cluster, Redis } from 'ioredis';
import type { StoreSettings } from '../config.js';
import type { Logger } from '../log.js';
import { readAll, requireExpectedEtag, resolveRange, sha256Hex, toReadable } from './body.js';
import { decodeCursor, decodeVersionsCursor, encodeCursor, encodeVersionsCursor, pageLimit } from './cursor.js';
import {
  failureCode,
  InvalidArgumentError,
  isStorageError,
  NotFoundError,
  PayloadTooLargeError,
  PermissionDeniedError,
  PreconditionFailedError,
  ProviderUnavailableError,
  StorageError,
  StorageFullError,
} from './errors.js';
import { isFenceError, passFence } from './fence.js';
import { requirePreconditions, type IfMatch, type IfNoneMatch } from './if-match.js';
import { DIFF_MAX_BYTES, isBinary, tooLargeToDiff, unifiedDiff } from './git-diff.js';
import { describeCommit, KeyIndex, type CommitEntry, type KeyChange, type VersionRecord } from './git-index.js';
import {
  checkIdentityPart,
  checkUnicode,
  contentPath,
  encodeRecord,
  forgetTrailer,
  isObjectId,
  recordPath,
  validateBranchName,
  type KeyRecord,
} from './git-layout.js';
import { repoLock, type Lease, type RepoLock } from './git-lock.js';
import {
  encodeCommit,
  encodeObject,
  isTooLargeToHold,
  MissingObjectError,
  ObjectStore,
  toByteString,
  type Identity,
  type Staging,
  type TreeEdit,
} from './git-objects.js';
import { locateGitdir, refuseIncompleteRepository, refuseSymbolicBranch, repositoryUsage } from './git-repository.js';
import { validateKey, validatePrefix } from './keys.js';
import { describeWrite } from './metadata.js';
import type {
  Author,
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

/**
 * Largest body a git store takes, and its default. Objects are held whole in memory on their way in and out, and
 * Node reads at most 2 GiB - 1 from a file at once (a loose object is one file) and hashes at most that in one
 * call; a write also holds the content about three times over (raw, with git's header, compressed).
 */
export const GIT_MAX_OBJECT_BYTES = 1024 ** 3;
/** Mutations committed together at most (each its own commit); bounds the memory of one chain. */
const MAX_CHAIN = 128;
/** A ref moved by someone else (a git CLI commit) between our read and our swap: rebuild and retry this often. */
const MAX_REF_RACES = 5;
const USAGE_TTL_MS = 30_000;

export interface GitProviderOptions {
  /** A bare repository, or a directory holding `.git`; created (bare) when missing. */
  repoPath: string;
  /** Default `main`. */
  branch?: string;
  /** Committer, and author of plain writes. Default `Kyozo <kyozo@localhost>`. */
  user?: { name: string; email: string };
  /** Serialize commits across processes with a Redis lease (`GIT_LOCK=redis`). */
  redisLock?: { redis: Redis | Cluster; keyPrefix?: string; leaseMs?: number; acquireTimeoutMs?: number };
  /** Sync objects and refs to disk before the branch moves (`DISK_FSYNC`). Default false. */
  fsync?: boolean;
  /** Bodies over this are refused with `PayloadTooLargeError`; at most (and by default) `GIT_MAX_OBJECT_BYTES`. */
  maxObjectBytes?: number;
  log?: Logger;
}

export interface GitBranchOption {
  /** Another branch than the store's `GIT_BRANCH`; it must exist (`createBranch`). */
  branch?: string;
}
export type GitWriteOptions = WriteOptions & GitBranchOption;
export type GitVersionOptions = VersionOptions & GitBranchOption;
export type GitReadOptions = ReadOptions & GitBranchOption;
export type GitListOptions = ListOptions & GitBranchOption;
export type GitRestoreOptions = RestoreOptions & GitBranchOption;
export type GitDeleteOptions = DeleteOptions & GitBranchOption;

export interface BranchInfo {
  name: string;
  /** Commit id the branch points at. */
  head: string;
  /** The store's own branch (`GIT_BRANCH`). */
  isDefault: boolean;
}

interface DiffSide {
  size: number;
  etag: string;
}

/** `before`/`after` are null where the key does not exist at that commit. */
export type GitDiff = { key: string; from: string; to: string } & (
  | { binary: false; patch: string; additions: number; deletions: number }
  | { binary: true; before: DiffSide | null; after: DiffSide | null }
);

interface PutMutation {
  kind: 'put';
  key: string;
  blob: { oid: string; size: number; etag: string };
  contentType: string;
  metadata: Record<string, string>;
  ifMatch?: IfMatch;
  ifNoneMatch?: IfNoneMatch;
  message: string;
  author: Author;
  /** A restore's source version: it must still be one when the restore commits (`requireSource`). */
  source?: string;
}

interface DeleteMutation {
  kind: 'delete';
  key: string;
  allVersions: boolean;
}

type Queued = (PutMutation | DeleteMutation) & {
  branch: string;
  /** Passed in the chain right before the mutation's commit is planned (`Fenced`). */
  fence?: Fenced['fence'];
  settled: boolean;
  resolve(record: VersionRecord | undefined): void;
  reject(error: unknown): void;
};

/** What the chain knows about a key after the commits made so far in it. */
interface KeyView {
  current: VersionRecord | undefined;
  versions: number;
}

interface Plan {
  edits: TreeEdit[];
  staged: Staging;
  message: string;
  author: Author;
  changes: KeyChange[];
  after: KeyView;
}

export function toObjectInfo(record: VersionRecord): ObjectInfo {
  return {
    key: record.key,
    size: record.size,
    etag: record.etag,
    contentType: record.contentType,
    metadata: { ...record.metadata },
    updatedAt: record.updatedAt,
    versionId: record.commit,
  };
}

export function toVersionInfo(record: VersionRecord): VersionInfo {
  return {
    versionId: record.commit,
    key: record.key,
    size: record.size,
    etag: record.etag,
    createdAt: record.updatedAt,
    message: record.message,
    author: { ...record.author },
  };
}

/**
 * Failures from the filesystem as the contract's errors (the original kept as `cause`). `what` names the operation
 * and its key (`read "k"`); the message adds the error's code, never its own message, which holds paths.
 */
function asStorageError(error: unknown, what: string): StorageError {
  if (isStorageError(error)) return error;
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return new StorageFullError(`${what}: the disk is full`, { cause: error });
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') return new PermissionDeniedError(`${what}: ${code}`, { cause: error });
  if (isTooLargeToHold(error)) {
    return new PayloadTooLargeError(`${what}: the git object is too large to be held in memory`, { cause: error });
  }
  return new ProviderUnavailableError(`${what} failed: ${failureCode(error)}`, { cause: error });
}

/**
 * A user's commit message. A line naming one of the store's trailers (`Kyozo-Forget-Versions: <key>`) would read
 * as the store's own instruction when the index is rebuilt from history, so the `Kyozo-` trailer names are refused.
 * A NUL is refused too: `git fsck --strict` rejects a commit holding one.
 */
function checkMessage(message: string): string {
  if (/^kyozo-[\w-]*:/im.test(message)) throw new InvalidArgumentError("a version message must not have a line starting with a 'Kyozo-…:' trailer");
  if (message.includes('\u0000')) throw new InvalidArgumentError('a version message must not contain a NUL character');
  checkUnicode(message, 'a version message');
  return message;
}

function normalizeAuthor(author: Author | undefined, fallback: Author): Author {
  if (author === undefined) return fallback;
  const name = checkIdentityPart(author.name, 'author name', true);
  const email = checkIdentityPart(author.email, 'author email', false);
  return email === '' ? { name } : { name, email };
}

function identity(author: Author, now: number): Identity {
  return { name: author.name, email: author.email ?? '', timestamp: Math.floor(now / 1000), timezoneOffset: 0 };
}

export class GitProvider implements StorageProvider {
  readonly kind = 'git' as const;
  readonly capabilities: Capabilities;

  private readonly indexes = new Map<string, Promise<KeyIndex>>();
  private readonly queue: Queued[] = [];
  private draining: Promise<void> | undefined;
  private closed = false;
  private readonly user: Author;
  private readonly maxObjectBytes: number;
  private usage: { at: number; value: Promise<{ objects: number; bytes: number }> } | undefined;

  private constructor(
    private readonly store: ObjectStore,
    private readonly lock: RepoLock,
    readonly branch: string,
    options: GitProviderOptions,
    private readonly log?: Logger,
  ) {
    this.user = normalizeAuthor(options.user, { name: 'Kyozo', email: 'kyozo@localhost' });
    this.maxObjectBytes = options.maxObjectBytes ?? GIT_MAX_OBJECT_BYTES;
    this.capabilities = {
      versioning: 'every-write',
      presign: 'signed-url',
      diff: true,
      branches: true,
      rangeReads: true,
      defaultAuthor: this.user,
      maxObjectBytes: this.maxObjectBytes,
    };
  }

  /** Opens (or creates) the repository, makes sure the branch has a first commit, and loads the branch's index. */
  static async open(options: GitProviderOptions): Promise<GitProvider> {
    const branch = validateBranchName(options.branch ?? 'main');
    const maxObjectBytes = options.maxObjectBytes ?? GIT_MAX_OBJECT_BYTES;
    if (!Number.isFinite(maxObjectBytes) || maxObjectBytes > GIT_MAX_OBJECT_BYTES) throw new InvalidArgumentError(`maxObjectBytes must be at most ${GIT_MAX_OBJECT_BYTES}`);
    try {
      const gitdir = await locateGitdir(path.resolve(options.repoPath), branch);
      await refuseIncompleteRepository(gitdir);
      await refuseSymbolicBranch(gitdir, branch);
      const real = await realpath(gitdir);
      const store = new ObjectStore(gitdir, options.fsync ?? false);
      const redis = options.redisLock;
      const lock = repoLock(
        real,
        redis && {
          ...redis,
          key: `${redis.keyPrefix ?? 'kyozo:'}git-lock:${createHash('sha1').update(real).digest('hex')}`,
        },
      );
      const provider = new GitProvider(store, lock, branch, options, options.log);
      await provider.ensureBranch();
      await provider.indexFor(branch);
      return provider;
    } catch (error) {
      throw asStorageError(error, `opening git repository ${options.repoPath}`);
    }
  }

  /** The first commit of an empty store, so HEAD always resolves and branches can start from it. */
  private async ensureBranch(): Promise<void> {
    const ref = `refs/heads/${this.branch}`;
    if (await this.store.resolveRef(ref)) return;
    await this.lock.run(async () => {
      if (await this.store.resolveRef(ref)) return;
      const staging: Staging = new Map();
      const tree = await this.store.editTree(undefined, [], staging);
      const now = Date.now();
      const commit = encodeCommit({
        tree,
        parents: [],
        author: identity(this.user, now),
        committer: identity(this.user, now),
        message: 'Initialize kyozo store\n',
      });
      staging.set(commit.oid, commit);
      await this.store.write(staging.values());
      await this.store.updateRef(ref, commit.oid, undefined);
    });
  }

  private async indexFor(branch: string | undefined): Promise<KeyIndex> {
    const name = branch ?? this.branch;
    if (name !== this.branch) {
      validateBranchName(name);
      if (!(await this.store.resolveRef(`refs/heads/${name}`))) throw new NotFoundError(`branch "${name}" does not exist`);
    }
    let index = this.indexes.get(name);
    if (!index) {
      const seed = name === this.branch ? undefined : await this.indexFor(this.branch);
      index = this.indexes.get(name) ?? KeyIndex.open(this.store, name, this.log, seed);
      this.indexes.set(name, index);
      index.catch(() => this.indexes.delete(name));
    }
    return index;
  }

  private async syncedIndex(branch: string | undefined): Promise<KeyIndex> {
    const index = await this.indexFor(branch);
    await index.sync();
    return index;
  }

  private async guard<T>(what: string, fn: () => Promise<T>): Promise<T> {
    if (this.closed) throw new ProviderUnavailableError('the git provider is closed');
    try {
      return await fn();
    } catch (error) {
      if (isFenceError(error)) throw error;
      throw asStorageError(error, what);
    }
  }

  // ---- writes ----

  write(key: string, body: Body, opts: GitWriteOptions = {}): Promise<ObjectInfo> {
    return this.guard(`write "${key}"`, async () => toObjectInfo(await this.put(key, body, opts, `write ${key}`, undefined)));
  }

  createVersion(key: string, body: Body, opts: GitVersionOptions): Promise<VersionInfo> {
    return this.guard(`createVersion "${key}"`, async () => {
      validateKey(key);
      if (typeof opts?.message !== 'string') throw new InvalidArgumentError('a version needs a message');
      return toVersionInfo(await this.put(key, body, opts, checkMessage(opts.message), opts.author));
    });
  }

  private async put(key: string, body: Body, opts: GitWriteOptions, message: string, author: Author | undefined): Promise<VersionRecord> {
    validateKey(key);
    const described = describeWrite(opts);
    const committedAs = normalizeAuthor(author, this.user);
    const blob = await this.storeBlob(body);
    requireExpectedEtag(key, opts.expectedEtag, blob.etag);
    const record = await this.enqueue({
      kind: 'put',
      branch: opts.branch ?? this.branch,
      key,
      blob,
      ...described,
      ifMatch: opts.ifMatch,
      ifNoneMatch: opts.ifNoneMatch,
      message,
      author: committedAs,
      fence: opts.fence,
    });
    return record!;
  }

  restoreVersion(key: string, versionId: string, opts: GitRestoreOptions = {}): Promise<VersionInfo> {
    return this.guard(`restoreVersion "${key}"`, async () => {
      validateKey(key);
      const author = normalizeAuthor(opts.author, this.user);
      const message = checkMessage(opts.message ?? `restore ${versionId}`);
      const source = await this.resolveVersion(key, versionId, opts.branch);
      const record = await this.enqueue({
        kind: 'put',
        branch: opts.branch ?? this.branch,
        key,
        blob: { oid: source.blob, size: source.size, etag: source.etag },
        contentType: source.contentType,
        metadata: source.metadata,
        message,
        author,
        source: versionId,
        fence: opts.fence,
      });
      return toVersionInfo(record!);
    });
  }

  delete(key: string, opts: GitDeleteOptions = {}): Promise<void> {
    return this.guard(`delete "${key}"`, async () => {
      validateKey(key);
      await this.enqueue({ kind: 'delete', branch: opts.branch ?? this.branch, key, allVersions: opts.allVersions === true, fence: opts.fence });
    });
  }

  /** Hashes and writes the content blob before the commit lock: a big body never holds other writers up. */
  private async storeBlob(body: Body): Promise<PutMutation['blob']> {
    const content = await readAll(body, this.maxObjectBytes);
    const blob = encodeObject('blob', content);
    await this.store.write([blob]);
    return { oid: blob.oid, size: content.length, etag: sha256Hex(content) };
  }

  private enqueue(mutation: PutMutation & Pick<Queued, 'branch' | 'fence'>): Promise<VersionRecord | undefined>;
  private enqueue(mutation: DeleteMutation & Pick<Queued, 'branch' | 'fence'>): Promise<VersionRecord | undefined>;
  private enqueue(mutation: (PutMutation | DeleteMutation) & Pick<Queued, 'branch' | 'fence'>): Promise<VersionRecord | undefined> {
    return new Promise((resolve, reject) => {
      this.queue.push({ ...mutation, settled: false, resolve, reject });
      this.draining ??= this.drain();
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const branch = this.queue[0]!.branch;
      const chain: Queued[] = [];
      while (chain.length < MAX_CHAIN && this.queue[0]?.branch === branch) chain.push(this.queue.shift()!);
      let outcomes: Map<Queued, Outcome>;
      try {
        outcomes = await this.lock.run((lease) => this.commitChain(branch, chain, lease));
      } catch (error) {
        for (const mutation of chain) settle(mutation, { error });
        continue;
      }
      // One per turn of the event loop, in commit order, after the lock is released and before the next chain:
      // from here to its job's event each takes only microtasks, but not as many for every kind of job, so settled
      // all at once a later commit's event could leave first.
      for (const [i, mutation] of chain.entries()) {
        if (i > 0) await new Promise((resolve) => setImmediate(resolve));
        settle(mutation, outcomes.get(mutation) ?? {});
      }
    }
    this.draining = undefined;
  }

  /**
   * Commits `chain` on `branch`, one commit per mutation, in order, and says what became of each: a mutation
   * whose precondition fails gets its error alone; the others go on.
   */
  private async commitChain(branch: string, chain: Queued[], lease: Lease): Promise<Map<Queued, Outcome>> {
    const index = await this.indexFor(branch);
    for (let attempt = 0; attempt < MAX_REF_RACES; attempt++) {
      await index.sync();
      const base = index.headCommit;
      if (base === undefined) throw new NotFoundError(`branch "${branch}" does not exist`);
      let tree = (await this.store.readCommit(base)).tree;
      let head = base;
      const staging: Staging = new Map();
      const entries: CommitEntry[] = [];
      const views = new Map<string, KeyView>();
      const forgotten = new Set<string>();
      const outcomes = new Map<Queued, Outcome>();
      for (const mutation of chain) {
        const view = views.get(mutation.key) ?? { current: index.current(mutation.key), versions: index.versions(mutation.key).length };
        const now = Date.now();
        let plan: Plan | undefined;
        try {
          await passFence(mutation);
          await this.requireSource(mutation, index, forgotten);
          plan = this.plan(mutation, view, now);
        } catch (error) {
          outcomes.set(mutation, { error });
          continue;
        }
        if (!plan) {
          outcomes.set(mutation, {});
          continue;
        }
        for (const object of plan.staged.values()) staging.set(object.oid, object);
        try {
          tree = await this.store.editTree(tree, plan.edits, staging);
        } catch (error) {
          // A path taken by the repository's own file is this mutation's failure alone; the chain goes on.
          if (!(error instanceof PermissionDeniedError)) throw error;
          outcomes.set(mutation, { error });
          continue;
        }
        const commit = encodeCommit({
          tree,
          parents: [head],
          author: identity(plan.author, now),
          committer: identity(this.user, now),
          message: `${plan.message}\n`,
        });
        staging.set(commit.oid, commit);
        entries.push({ commit: commit.oid, parent: head, message: plan.message, author: plan.author, changes: plan.changes });
        const version = plan.changes.find((change) => change.op === 'version');
        outcomes.set(mutation, {
          record:
            version?.op === 'version'
              ? { ...version.record, key: mutation.key, commit: commit.oid, message: plan.message, author: plan.author }
              : undefined,
        });
        views.set(mutation.key, plan.after);
        if (plan.changes.some((change) => change.op === 'forget')) forgotten.add(mutation.key);
        head = commit.oid;
      }
      if (entries.length > 0) {
        await this.store.write(staging.values());
        lease.assertHeld();
        const moved = await index.advance(entries, () => this.store.updateRef(index.ref, head, base));
        if (!moved) continue;
      }
      return outcomes;
    }
    throw new ProviderUnavailableError(`branch "${branch}" kept moving under the commit (another writer outside this store's lock?)`);
  }

  /**
   * A restore resolved its source before it queued; a `delete` with `allVersions` committed since (or earlier in
   * this chain, `forgotten`) may have forgotten that version, whose content must then not come back.
   */
  private async requireSource(mutation: Queued, index: KeyIndex, forgotten: ReadonlySet<string>): Promise<void> {
    if (mutation.kind !== 'put' || mutation.source === undefined) return;
    const { key, source } = mutation;
    const onBranch = index.hasCommit(source);
    const still = onBranch ? !forgotten.has(key) && index.findVersion(key, source) : await this.versionElsewhere(key, source, index);
    if (!still) throw new NotFoundError(`"${key}" has no version ${source} any more: it was forgotten before the restore committed`);
  }

  /** The commit one mutation makes on top of `view`, or undefined when there is nothing to commit. */
  private plan(mutation: Queued, view: KeyView, now: number): Plan | undefined {
    const { key } = mutation;
    const edits = (content: string | null, record: string | null): TreeEdit[] => [
      { path: contentPath(key).map(toByteString), oid: content },
      { path: recordPath(key).map(toByteString), oid: record },
    ];
    if (mutation.kind === 'put') {
      requirePreconditions(key, mutation, view.current?.etag);
      const record: KeyRecord = {
        etag: mutation.blob.etag,
        size: mutation.blob.size,
        blob: mutation.blob.oid,
        contentType: mutation.contentType,
        metadata: mutation.metadata,
        updatedAt: new Date(now).toISOString(),
        revision: view.versions + 1,
      };
      const recordBlob = encodeObject('blob', encodeRecord(record));
      return {
        edits: edits(mutation.blob.oid, recordBlob.oid),
        staged: new Map([[recordBlob.oid, recordBlob]]),
        message: mutation.message,
        author: mutation.author,
        changes: [{ op: 'version', key, record }],
        after: {
          current: { ...record, key, commit: '', message: mutation.message, author: mutation.author },
          versions: view.versions + 1,
        },
      };
    }
    if (mutation.allVersions) {
      if (!view.current && view.versions === 0) return undefined;
      return {
        edits: view.current ? edits(null, null) : [],
        staged: new Map(),
        message: `delete ${key} (all versions)\n\n${forgetTrailer(key)}`,
        author: this.user,
        changes: view.current ? [{ op: 'delete', key }, { op: 'forget', key }] : [{ op: 'forget', key }],
        after: { current: undefined, versions: 0 },
      };
    }
    if (!view.current) return undefined;
    return {
      edits: edits(null, null),
      staged: new Map(),
      message: `delete ${key}`,
      author: this.user,
      changes: [{ op: 'delete', key }],
      after: { current: undefined, versions: view.versions },
    };
  }

  // ---- reads ----

  read(key: string, opts: GitReadOptions = {}): Promise<{ info: ObjectInfo; body: Readable }> {
    return this.guard(`read "${key}"`, async () => {
      validateKey(key);
      const record = await this.resolveVersion(key, opts.versionId, opts.branch);
      let content = await this.store.readBlob(record.blob, record.size);
      if (opts.range) {
        const [start, end] = resolveRange(opts.range, content.length);
        content = content.subarray(start, end + 1);
      }
      return { info: toObjectInfo(record), body: toReadable(content) };
    });
  }

  stat(key: string, opts: { versionId?: string; branch?: string } = {}): Promise<ObjectInfo> {
    return this.guard(`stat "${key}"`, async () => {
      validateKey(key);
      return toObjectInfo(await this.resolveVersion(key, opts.versionId, opts.branch));
    });
  }

  /**
   * The current record of `key`, or the one at `versionId`: a version of the key on the branch (from the
   * index), or a commit elsewhere (another branch) that wrote the key.
   */
  private async resolveVersion(key: string, versionId: string | undefined, branch: string | undefined): Promise<VersionRecord> {
    const index = await this.syncedIndex(branch);
    if (versionId === undefined) {
      const current = index.current(key);
      if (!current) throw new NotFoundError(`"${key}" does not exist`);
      return current;
    }
    const found = index.findVersion(key, versionId) ?? (await this.versionElsewhere(key, versionId, index));
    if (!found) throw new NotFoundError(`"${key}" has no version ${versionId}`);
    return found;
  }

  /**
   * A commit off `index`'s branch is served as the version another branch still has: a version is forgotten
   * (`delete` with `allVersions`) on the branch whose history holds it, and what is forgotten there must not come
   * back through a branch that never had it. A commit of `index`'s branch that is no version of the key there was
   * forgotten on it (or did not write the key), and is not looked for elsewhere.
   */
  private async versionElsewhere(key: string, versionId: string, index: KeyIndex): Promise<VersionRecord | undefined> {
    if (!isObjectId(versionId) || index.hasCommit(versionId) || !(await this.wroteKey(versionId, key))) return undefined;
    for (const name of await this.store.listBranches()) {
      if (name === index.branch) continue;
      let other: KeyIndex;
      try {
        other = await this.syncedIndex(name);
      } catch (error) {
        // A branch deleted meanwhile, or one made with the git CLI under a name the store refuses to use.
        if (error instanceof NotFoundError || error instanceof InvalidArgumentError) continue;
        throw error;
      }
      const version = other.findVersion(key, versionId);
      if (version) return version;
    }
    return undefined;
  }

  /** Checked before any other branch's index is loaded for it: most ids that miss are no version of the key anywhere. */
  private async wroteKey(commit: string, key: string): Promise<boolean> {
    try {
      const entry = await describeCommit(this.store, commit);
      return entry.changes.some((change) => change.key === key && change.op === 'version');
    } catch (error) {
      if (error instanceof MissingObjectError) return false;
      throw error;
    }
  }

  list(opts: GitListOptions = {}): Promise<Page<ObjectInfo>> {
    return this.guard('list', async () => {
      const prefix = validatePrefix(opts.prefix);
      const limit = pageLimit(opts.limit);
      const after = decodeCursor(opts.cursor);
      const index = await this.syncedIndex(opts.branch);
      const { keys, more } = index.liveKeys(prefix, after, limit);
      const items = keys.map((key) => toObjectInfo(index.current(key)!));
      return more && keys.length > 0 ? { items, cursor: encodeCursor(keys.at(-1)!) } : { items };
    });
  }

  listVersions(key: string, opts: { cursor?: string; limit?: number; branch?: string } = {}): Promise<Page<VersionInfo>> {
    return this.guard(`listVersions "${key}"`, async () => {
      validateKey(key);
      const limit = pageLimit(opts.limit);
      const after = decodeVersionsCursor(key, opts.cursor);
      const index = await this.syncedIndex(opts.branch);
      const versions = index.versions(key);
      let start = versions.length - 1;
      if (after !== undefined) {
        const at = versions.findLastIndex((version) => version.commit === after);
        // A commit of the branch that is no version any more was forgotten with every older one: nothing is left.
        if (at < 0 && index.hasCommit(after)) return { items: [] };
        if (at < 0) throw new InvalidArgumentError('cursor names a commit this branch does not have');
        start = at - 1;
      }
      const items: VersionInfo[] = [];
      for (let i = start; i >= 0 && items.length < limit; i--) items.push(toVersionInfo(versions[i]!));
      const more = start - items.length >= 0;
      return more && items.length > 0 ? { items, cursor: encodeVersionsCursor(key, items.at(-1)!.versionId) } : { items };
    });
  }

  // ---- git only ----

  /**
   * A unified diff of `key` between two commits (version ids of the key, or branch names; `to` defaults to the
   * head of the store's branch). A side where the key does not exist is `/dev/null`; binary content gets sizes
   * and etags.
   */
  diff(key: string, from: string, to?: string): Promise<GitDiff> {
    return this.guard(`diff "${key}"`, async () => {
      validateKey(key);
      const [fromSide, toSide] = await Promise.all([this.diffSide(key, from), this.diffSide(key, to ?? this.branch)]);
      const [before, after] = [fromSide.content, toSide.content];
      if (before === null && after === null) throw new NotFoundError(`"${key}" exists at neither ${from} nor ${to ?? this.branch}`);
      const sides = { key, from: fromSide.commit, to: toSide.commit };
      // Checked first: telling text from binary decodes the whole content, and describing it hashes it.
      const size = Math.max(before?.length ?? 0, after?.length ?? 0);
      if (size > DIFF_MAX_BYTES) throw tooLargeToDiff(key, `${size.toLocaleString('en')} bytes`);
      if ((before && isBinary(before)) || (after && isBinary(after))) {
        const describe = (bytes: Buffer | null) => bytes && { size: bytes.length, etag: sha256Hex(bytes) };
        return { ...sides, binary: true, before: describe(before), after: describe(after) };
      }
      return { ...sides, binary: false, ...unifiedDiff(before?.toString('utf8') ?? null, after?.toString('utf8') ?? null, key) };
    });
  }

  /**
   * `key` at a version id, resolved as reads resolve it (a version that `delete` with `allVersions` forgot, or a
   * commit that did not write the key, is not found), or at the head of a branch (null where it does not exist).
   */
  private async diffSide(key: string, revision: string): Promise<{ commit: string; content: Buffer | null }> {
    if (isObjectId(revision)) {
      const version = await this.resolveVersion(key, revision, undefined);
      return { commit: version.commit, content: await this.store.readBlob(version.blob, version.size) };
    }
    const commit = await this.resolveCommit(revision);
    return { commit, content: await this.contentAt(commit, key) };
  }

  /** Creates branch `name` at `from` (a branch name or commit id; default: the head of the store's branch). */
  createBranch(name: string, from?: string): Promise<BranchInfo> {
    return this.guard('createBranch', async () => {
      validateBranchName(name);
      const head = await this.resolveCommit(from ?? this.branch);
      // Packed refs (any `git gc` packs them) have no files for the filesystem to clash on below.
      const clash = (await this.store.listBranches()).find((other) => other.startsWith(`${name}/`) || name.startsWith(`${other}/`));
      if (clash !== undefined) throw new PreconditionFailedError(`branch "${name}" conflicts with the existing branch "${clash}"`);
      const exists = new PreconditionFailedError(`branch "${name}" already exists`);
      try {
        if (!(await this.store.updateRef(`refs/heads/${name}`, head, undefined))) throw exists;
      } catch (error) {
        // `a` and `a/b` cannot both be branches: one would be a file and a directory under refs/heads.
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'EISDIR' || code === 'ENOTDIR' || code === 'EEXIST') {
          throw new PreconditionFailedError(`branch "${name}" conflicts with an existing branch`, { cause: error });
        }
        throw error;
      }
      return { name, head, isDefault: name === this.branch };
    });
  }

  listBranches(): Promise<BranchInfo[]> {
    return this.guard('listBranches', async () => {
      const branches: BranchInfo[] = [];
      for (const name of await this.store.listBranches()) {
        const head = await this.store.resolveRef(`refs/heads/${name}`);
        if (head) branches.push({ name, head, isDefault: name === this.branch });
      }
      return branches;
    });
  }

  private async resolveCommit(revision: string): Promise<string> {
    if (typeof revision !== 'string' || revision === '') throw new InvalidArgumentError('a commit id or branch name is needed');
    if (isObjectId(revision)) {
      try {
        await this.store.readCommit(revision);
        return revision;
      } catch (error) {
        throw new NotFoundError(`no commit ${revision}`, { cause: error });
      }
    }
    validateBranchName(revision);
    const head = await this.store.resolveRef(`refs/heads/${revision}`);
    if (!head) throw new NotFoundError(`branch "${revision}" does not exist`);
    return head;
  }

  private async contentAt(commit: string, key: string): Promise<Buffer | null> {
    const { tree } = await this.store.readCommit(commit);
    const blob = await this.store.blobAt(tree, contentPath(key).map(toByteString));
    return blob === undefined ? null : this.store.readBlob(blob);
  }

  // ---- operations ----

  stats(): Promise<ProviderStats> {
    return this.guard('stats', async () => {
      const index = await this.syncedIndex(undefined);
      const summary = index.summary();
      const disk = await this.repositoryUsage();
      return {
        kind: 'git',
        objects: summary.objects,
        bytes: summary.bytes,
        versions: summary.versions,
        detail: {
          branch: this.branch,
          head: index.headCommit,
          commits: summary.commits,
          gitObjects: disk.objects,
          repositoryBytes: disk.bytes,
          gitdir: this.store.gitdir,
        },
      };
    });
  }

  /** Walking the git directory costs ~0.3 s at 2,000 commits (16,000 loose objects): done at most every 30 s. */
  private async repositoryUsage(): Promise<{ objects: number; bytes: number }> {
    const now = Date.now();
    if (!this.usage || now - this.usage.at > USAGE_TTL_MS) {
      this.usage = { at: now, value: repositoryUsage(this.store.gitdir) };
      this.usage.value.catch(() => {
        this.usage = undefined;
      });
    }
    return this.usage.value;
  }

  async health(): Promise<HealthReport> {
    const started = performance.now();
    const report = (status: HealthReport['status'], detail: string): HealthReport => ({
      status,
      detail,
      latencyMs: performance.now() - started,
    });
    try {
      const head = await this.store.resolveRef(`refs/heads/${this.branch}`);
      if (!head) return report('down', `branch ${this.branch} does not resolve`);
      const object = await this.store.read(head);
      if (object.type !== 'commit') return report('down', `branch ${this.branch} points at a ${object.type}`);
      // The root tree too: every write and every listing starts from it, and a damaged one fails them all.
      const tree = /^tree ([0-9a-f]{40})\n/.exec(object.content.toString('latin1', 0, 46))?.[1];
      if (tree === undefined || (await this.store.read(tree)).type !== 'tree') return report('down', `branch ${this.branch}'s commit has no readable tree`);
      return report('ok', `branch ${this.branch} at ${head}`);
    } catch (error) {
      return report('down', `repository unreadable: ${(error as Error).message}`);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.draining;
  }
}

/** What committing a chain did for one of its mutations. */
type Outcome = { record?: VersionRecord; error?: unknown };

function settle(mutation: Queued, outcome: Outcome): void {
  if (mutation.settled) return;
  mutation.settled = true;
  if (outcome.error !== undefined) mutation.reject(outcome.error);
  else mutation.resolve(outcome.record);
}

/** Opens the git store described by a store's settings (`GIT_*`); `GIT_LOCK=redis` needs `deps.redis`. */
export function openGitStore(settings: StoreSettings, deps: { redis?: Redis | Cluster; log?: Logger }): Promise<GitProvider> {
  if (settings.GIT_LOCK === 'redis' && !deps.redis) {
    throw new InvalidArgumentError(`store "${settings.name}": GIT_LOCK=redis needs a Redis connection`);
  }
  return GitProvider.open({
    repoPath: settings.GIT_REPO_PATH ?? path.join(settings.rootDir, 'git', settings.name),
    branch: settings.GIT_BRANCH,
    user: { name: settings.GIT_USER_NAME, email: settings.GIT_USER_EMAIL },
    redisLock: settings.GIT_LOCK === 'redis' && deps.redis ? { redis: deps.redis } : undefined,
    fsync: settings.DISK_FSYNC,
    log: deps.log?.child({ store: settings.name, provider: 'git' }),
  });
}
