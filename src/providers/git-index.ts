/**
 * The per-key index of one branch: for every key, the commits that wrote it (its versions, with size, etag,
 * contentType, metadata, message and author), and which keys exist at the branch head. `listVersions`, `stat`,
 * `list` and reads at a version answer from it in memory, so their cost follows the key's own history, never
 * the repository's (isomorphic-git's `log({ filepath })` walks every commit: 1.1–2.4 s at 1,000 commits).
 *
 * It is a cache of what the history says, never a second truth:
 * - Kept outside the tree, in `<gitdir>/kyozo/index/<branch>.jsonl`: a header line, then one JSON line per commit
 *   (appended, one write each) or a snapshot line of the whole state (written by rename after a rebuild).
 *   Several processes may append; lines that do not continue the chain (duplicates, torn tails) are skipped.
 * - Stale when the branch head is not the head it was built at: it walks only the new commits (first parent)
 *   back to its own head and replays them. When its head is no longer in the branch's history (a reset, a
 *   rewrite) or the file is missing or unreadable, it is rebuilt from the whole history.
 * - Replaying a commit diffs its tree against its first parent's (unchanged subtrees are skipped by oid) and
 *   reads each changed key's record; a content file changed without its record (a commit made with the git CLI)
 *   is described from the blob itself.
 */
import { appendFile, readFile, rename, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../log.js';
import { makeDirectories } from './atomic-file.js';
import { sha256Hex } from './body.js';
import { contentPath, decodeRecord, forgottenKeys, isRecordPath, keyOfPath, RECORD_ROOT, recordPath, type KeyRecord } from './git-layout.js';
import { fromByteString, isTooLargeToHold, isTreeMode, toByteString, type CommitObject, type Identity, type ObjectStore } from './git-objects.js';
import { compareKeys } from './keys.js';
import { SortedKeys } from './sorted-keys.js';
import { DEFAULT_CONTENT_TYPE, type Author } from './types.js';

/**
 * Escaped branch names up to this length name their index file: with `.jsonl`, and the `.tmp-<pid>-<ms>` of the file
 * it is written as first, within a file name's 255 bytes.
 */
const MAX_ESCAPED_NAME = 200;

export interface VersionRecord extends KeyRecord {
  key: string;
  commit: string;
  message: string;
  author: Author;
}

export type KeyChange = { op: 'version'; key: string; record: KeyRecord } | { op: 'delete'; key: string } | { op: 'forget'; key: string };

/** What one commit did to the keys of its branch. */
export interface CommitEntry {
  commit: string;
  parent: string | undefined;
  message: string;
  author: Author;
  changes: KeyChange[];
}

interface KeyState {
  /** Oldest first. */
  versions: VersionRecord[];
  /** `versions` by commit, built at the first lookup in a history longer than `SCAN_LIMIT`, then kept in step. */
  byCommit?: Map<string, VersionRecord>;
  live: boolean;
}

const FORMAT = { kyozoIndex: 1 } as const;
/** Commits described concurrently while replaying history. */
const REPLAY_WINDOW = 16;
/**
 * Histories up to this long are scanned to find a version (~1 µs per version measured at 10,000 of them: a few
 * tens of µs here); longer ones get a map, so that short histories, most keys, never pay for one.
 */
export const SCAN_LIMIT = 32;

export function authorOf(identity: Identity): Author {
  return identity.email === '' ? { name: identity.name } : { name: identity.name, email: identity.email };
}

/** The message as given: the store ends every commit message with one newline, as git does. */
export function messageOf(commit: CommitObject): string {
  return commit.message.endsWith('\n') ? commit.message.slice(0, -1) : commit.message;
}

export class KeyIndex {
  private head: string | undefined;
  private readonly commits = new Set<string>();
  private readonly keys = new Map<string, KeyState>();
  /** Live keys in `compareKeys` order. */
  private readonly live = new SortedKeys();
  private liveBytes = 0;
  private versionCount = 0;
  private needsSnapshot = false;
  private tail: Promise<unknown> = Promise.resolve();
  /** The catch-up that has not started yet. */
  private queued: Promise<void> | undefined;
  private persistAfter = 0;

  private constructor(
    private readonly store: ObjectStore,
    readonly branch: string,
    private readonly file: string,
    private readonly log?: Logger,
  ) {}

  /** Named by the branch, or by its hash when the escaped name would pass a file name's 255 bytes (a long non-ASCII branch). */
  static indexFile(gitdir: string, branch: string): string {
    const escaped = encodeURIComponent(branch);
    const name = escaped.length <= MAX_ESCAPED_NAME ? escaped : `~${sha256Hex(branch)}`;
    return path.join(gitdir, 'kyozo', 'index', `${name}.jsonl`);
  }

  /**
   * Loads the index file (whatever of it continues the chain) and catches up with the branch. Without a usable
   * file, a new branch starts from `seed` (the store branch's index): a branch made from its head, or ahead of
   * it, then replays only its own commits instead of the whole history.
   */
  static async open(store: ObjectStore, branch: string, log?: Logger, seed?: KeyIndex): Promise<KeyIndex> {
    const index = new KeyIndex(store, branch, KeyIndex.indexFile(store.gitdir, branch), log);
    await index.load();
    if (index.head === undefined && seed?.head !== undefined) index.copyFrom(seed);
    await index.sync();
    return index;
  }

  private copyFrom(seed: KeyIndex): void {
    this.reset();
    for (const commit of seed.commits) this.commits.add(commit);
    for (const [key, state] of seed.keys) this.keys.set(key, { versions: [...state.versions], live: state.live });
    this.live.reset([...seed.live.from('')]);
    this.liveBytes = seed.liveBytes;
    this.versionCount = seed.versionCount;
    this.head = seed.head;
    this.needsSnapshot = true;
  }

  get ref(): string {
    return `refs/heads/${this.branch}`;
  }

  /** Runs `fn` alone: catching up, and moving the branch together with recording the move. */
  private exclusively<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => {});
    return run;
  }

  /**
   * Brings the index to the branch head as it is at the call or later. A catch-up under way may have read the
   * head before a commit that finished before this call, so callers queue one more after it; callers arriving
   * while that one waits share it.
   */
  sync(): Promise<void> {
    this.queued ??= this.exclusively(() => {
      this.queued = undefined;
      return this.catchUp();
    });
    return this.queued;
  }

  /**
   * Moves the branch with `move` (a compare-and-swap from `entries[0].parent`) and, when it succeeded, records
   * `entries`: readers of this index never see the new head before its entries.
   */
  advance(entries: CommitEntry[], move: () => Promise<boolean>): Promise<boolean> {
    return this.exclusively(async () => {
      if (!(await move())) return false;
      if (this.head === entries[0]?.parent) {
        for (const entry of entries) this.apply(entry);
        await this.persist(entries);
      } else {
        await this.catchUp();
      }
      return true;
    });
  }

  // ---- queries ----

  get headCommit(): string | undefined {
    return this.head;
  }

  hasCommit(oid: string): boolean {
    return this.commits.has(oid);
  }

  current(key: string): VersionRecord | undefined {
    const state = this.keys.get(key);
    return state?.live ? state.versions.at(-1) : undefined;
  }

  /** Oldest first. */
  versions(key: string): readonly VersionRecord[] {
    return this.keys.get(key)?.versions ?? [];
  }

  findVersion(key: string, commit: string): VersionRecord | undefined {
    const state = this.keys.get(key);
    if (!state) return undefined;
    const { versions } = state;
    if (versions.length <= SCAN_LIMIT) {
      for (let i = versions.length - 1; i >= 0; i--) if (versions[i]!.commit === commit) return versions[i];
      return undefined;
    }
    state.byCommit ??= new Map(versions.map((version) => [version.commit, version]));
    return state.byCommit.get(commit);
  }

  /** Live keys starting with `prefix`, after `after` (exclusive), at most `limit`, and whether more follow. */
  liveKeys(prefix: string, after: string | undefined, limit: number): { keys: string[]; more: boolean } {
    const from = after !== undefined && compareKeys(after, prefix) >= 0 ? this.live.from(after, true) : this.live.from(prefix);
    const keys: string[] = [];
    // Keys from `prefix` on that do not start with it sort after every key that does.
    for (const key of from) {
      if (!key.startsWith(prefix)) break;
      if (keys.length === limit) return { keys, more: true };
      keys.push(key);
    }
    return { keys, more: false };
  }

  summary(): { objects: number; bytes: number; versions: number; commits: number } {
    return { objects: this.live.size, bytes: this.liveBytes, versions: this.versionCount, commits: this.commits.size };
  }

  // ---- state ----

  private reset(): void {
    this.head = undefined;
    this.commits.clear();
    this.keys.clear();
    this.live.reset([]);
    this.liveBytes = 0;
    this.versionCount = 0;
  }

  private apply(entry: CommitEntry): void {
    if (this.commits.has(entry.commit)) return;
    for (const change of entry.changes) {
      let state = this.keys.get(change.key);
      if (!state) {
        state = { versions: [], live: false };
        this.keys.set(change.key, state);
      }
      if (change.op === 'version') {
        if (state.live) this.liveBytes -= state.versions.at(-1)?.size ?? 0;
        else this.setLive(change.key, state, true);
        const version: VersionRecord = { ...change.record, key: change.key, commit: entry.commit, message: entry.message, author: entry.author };
        state.versions.push(version);
        state.byCommit?.set(version.commit, version);
        this.versionCount++;
        this.liveBytes += change.record.size;
      } else if (change.op === 'delete') {
        if (state.live) {
          this.liveBytes -= state.versions.at(-1)?.size ?? 0;
          this.setLive(change.key, state, false);
        }
      } else {
        this.versionCount -= state.versions.length;
        state.versions = [];
        state.byCommit = undefined;
        if (state.live) this.setLive(change.key, state, false);
      }
    }
    this.commits.add(entry.commit);
    this.head = entry.commit;
  }

  private setLive(key: string, state: KeyState, live: boolean): void {
    state.live = live;
    if (live) this.live.add(key);
    else this.live.delete(key);
  }

  // ---- history ----

  private async catchUp(): Promise<void> {
    const tip = await this.store.resolveRef(this.ref);
    if (tip === this.head) {
      if (this.needsSnapshot && Date.now() >= this.persistAfter) await this.persist([]);
      return;
    }
    const fresh: string[] = [];
    let at = tip;
    while (at !== undefined && at !== this.head && !this.commits.has(at)) {
      fresh.push(at);
      at = (await this.store.readCommit(at)).parents[0];
    }
    if (at !== this.head) {
      // The index's head is not an ancestor of the branch head any more: start over from the root.
      this.log?.warn({ branch: this.branch, indexHead: this.head, branchHead: tip }, 'git index: history changed, rebuilding');
      while (at !== undefined) {
        fresh.push(at);
        at = (await this.store.readCommit(at)).parents[0];
      }
      this.reset();
      this.needsSnapshot = true;
    }
    if (fresh.length > 500) this.log?.info({ branch: this.branch, commits: fresh.length }, 'git index: replaying history');
    // Describing a commit needs only its own trees, so several are read at once; they are applied in order.
    const oldestFirst = fresh.reverse();
    const described = new Map<number, Promise<CommitEntry>>();
    const describe = (i: number) => {
      if (i < oldestFirst.length && !described.has(i)) described.set(i, describeCommit(this.store, oldestFirst[i]!));
    };
    const entries: CommitEntry[] = [];
    for (let i = 0; i < oldestFirst.length; i++) {
      for (let ahead = i; ahead < i + REPLAY_WINDOW; ahead++) describe(ahead);
      const entry = await described.get(i)!;
      described.delete(i);
      this.apply(entry);
      entries.push(entry);
    }
    await this.persist(entries);
  }

  // ---- file ----

  private async load(): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch {
      this.needsSnapshot = true;
      return;
    }
    const lines = text.split('\n');
    try {
      if ((JSON.parse(lines[0] ?? '') as typeof FORMAT).kyozoIndex !== FORMAT.kyozoIndex) throw new Error('unknown format');
    } catch {
      this.needsSnapshot = true;
      return;
    }
    let applied = 0;
    let skipped = 0;
    for (const line of lines.slice(1)) {
      if (line === '') continue;
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch {
        skipped++; // a torn write
        continue;
      }
      if (isSnapshot(value)) {
        this.loadSnapshot(value);
      } else if (isBlock(value) && !this.commits.has(value.c) && (value.p ?? undefined) === this.head) {
        this.apply(blockToEntry(value));
        applied++;
      } else {
        skipped++; // appended twice (several processes caught up on one commit), or off the chain
      }
    }
    // Rewritten as one snapshot at the next write when most of it is dead weight.
    if (skipped > applied) this.needsSnapshot = true;
  }

  private async persist(entries: CommitEntry[]): Promise<void> {
    try {
      if (!this.needsSnapshot && entries.length === 0) return;
      const exists = await stat(this.file).then(
        () => true,
        () => false,
      );
      await makeDirectories(path.dirname(this.file));
      if (this.needsSnapshot || !exists) {
        const temp = `${this.file}.tmp-${process.pid}-${Date.now()}`;
        await writeFile(temp, `${JSON.stringify(FORMAT)}\n${JSON.stringify(this.snapshot())}\n`);
        await rename(temp, this.file);
        this.needsSnapshot = false;
      } else {
        await appendFile(this.file, entries.map((entry) => `${JSON.stringify(entryToBlock(entry))}\n`).join(''));
      }
    } catch (error) {
      // The file only saves replaying history at the next start: losing a write of it costs time, not data.
      this.needsSnapshot = true;
      this.persistAfter = Date.now() + 60_000; // a read-only volume: do not retry on every read
      this.log?.warn({ err: error, file: this.file }, 'git index: could not write the index file');
    }
  }

  private snapshot(): Snapshot {
    const keys: Snapshot['keys'] = [];
    for (const [key, state] of this.keys) {
      if (state.versions.length === 0 && !state.live) continue;
      keys.push([key, state.live, state.versions.map(recordToRow)]);
    }
    return { snapshot: this.head ?? null, commits: [...this.commits], keys };
  }

  private loadSnapshot(value: Snapshot): void {
    this.reset();
    const liveKeys: string[] = [];
    for (const commit of value.commits) this.commits.add(commit);
    for (const [key, live, rows] of value.keys) {
      const versions = rows.map((row) => rowToRecord(key, row));
      this.keys.set(key, { versions, live });
      this.versionCount += versions.length;
      if (live) {
        liveKeys.push(key);
        this.liveBytes += versions.at(-1)?.size ?? 0;
      }
    }
    this.live.reset(liveKeys.sort(compareKeys));
    this.head = value.snapshot ?? undefined;
  }
}

// ---- reading history ----

/** Describes what commit `oid` did to the keys, from its tree and its first parent's. */
export async function describeCommit(store: ObjectStore, oid: string): Promise<CommitEntry> {
  const commit = await store.readCommit(oid);
  const parent = commit.parents[0];
  const before = parent === undefined ? undefined : (await store.readCommit(parent)).tree;
  const changed: string[][] = [];
  await diffTrees(store, before, commit.tree, [], changed);
  const touched = new Set<string>();
  for (const bytes of changed) {
    const segments = bytes.map(fromByteString);
    // A name that is not UTF-8 (committed by other means) is no key's: decoded, it would be another key's name.
    if (segments.some((segment, i) => toByteString(segment) !== bytes[i])) continue;
    const key = isRecordPath(segments) ? keyOfPath(segments.slice(RECORD_ROOT.length)) : segments[0] === RECORD_ROOT[0] ? undefined : keyOfPath(segments);
    if (key !== undefined) touched.add(key);
  }
  const message = messageOf(commit);
  // The store's own forget commit removes the key, or changes nothing when the key was already deleted; a trailer
  // in a commit that changed any other key is someone's text (a user's message, a foreign commit), not a forget.
  const named = forgottenKeys(message);
  const forgotten = new Set([...touched].every((key) => named.includes(key)) ? named : []);
  const changes: KeyChange[] = [];
  for (const key of [...new Set([...touched, ...forgotten])].sort(compareKeys)) {
    const content = await store.blobAt(commit.tree, contentPath(key).map(toByteString));
    if (content !== undefined && !touched.has(key)) continue;
    const record = content === undefined ? null : await recordAt(store, commit, key, content);
    if (record !== null) {
      changes.push({ op: 'version', key, record });
      continue;
    }
    if (touched.has(key)) changes.push({ op: 'delete', key });
    if (forgotten.has(key)) changes.push({ op: 'forget', key });
  }
  return { commit: oid, parent, message, author: authorOf(commit.author), changes };
}

/**
 * The record of `key`'s content in `commit`: its own record file, or (a file committed by other means) one made by
 * reading the content. `null` for such a file too large to read whole (a 2 GiB file committed with the git CLI): the
 * key is then taken as absent at that commit, rather than the whole history failing to load over one file.
 */
async function recordAt(store: ObjectStore, commit: CommitObject, key: string, content: string): Promise<KeyRecord | null> {
  const recordBlob = await store.blobAt(commit.tree, recordPath(key).map(toByteString));
  const record = recordBlob === undefined ? undefined : decodeRecord(await store.readBlob(recordBlob, 0));
  if (record && record.blob === content) return record;
  let bytes: Buffer;
  try {
    bytes = await store.readBlob(content);
  } catch (error) {
    if (isTooLargeToHold(error)) return null;
    throw error;
  }
  return {
    etag: sha256Hex(bytes),
    size: bytes.length,
    blob: content,
    contentType: record?.contentType ?? DEFAULT_CONTENT_TYPE,
    metadata: record?.metadata ?? {},
    updatedAt: new Date(commit.committer.timestamp * 1000).toISOString(),
    revision: record?.revision ?? 0,
  };
}

/** Appends to `out` every file path (byte-string segments) that differs between trees `a` and `b`. */
async function diffTrees(store: ObjectStore, a: string | undefined, b: string | undefined, prefix: string[], out: string[][]): Promise<void> {
  if (a === b) return;
  const pairs = new Map<string, [left?: { mode: string; oid: string }, right?: { mode: string; oid: string }]>();
  for (const entry of a === undefined ? [] : await store.readTree(a)) pairs.set(entry.name, [entry, undefined]);
  for (const entry of b === undefined ? [] : await store.readTree(b)) pairs.set(entry.name, [pairs.get(entry.name)?.[0], entry]);
  for (const [name, [left, right]] of pairs) {
    if (left && right && left.oid === right.oid && left.mode === right.mode) continue;
    const path = [...prefix, name];
    const leftTree = left && isTreeMode(left.mode) ? left.oid : undefined;
    const rightTree = right && isTreeMode(right.mode) ? right.oid : undefined;
    if (leftTree !== undefined || rightTree !== undefined) await diffTrees(store, leftTree, rightTree, path, out);
    if ((left && leftTree === undefined) || (right && rightTree === undefined)) out.push(path);
  }
}

// ---- file format ----

type Row = [commit: string, blob: string, size: number, etag: string, contentType: string, metadata: Record<string, string>, updatedAt: string, revision: number, message: string, author: string, email: string | null];

interface Snapshot {
  snapshot: string | null;
  commits: string[];
  keys: [key: string, live: boolean, versions: Row[]][];
}

type ChangeRow = ['v', string, string, number, string, string, Record<string, string>, string, number] | ['d', string] | ['f', string];

interface Block {
  c: string;
  p: string | null;
  m: string;
  a: [string, string | null];
  ch: ChangeRow[];
}

function isSnapshot(value: unknown): value is Snapshot {
  return typeof value === 'object' && value !== null && 'snapshot' in value && Array.isArray((value as Snapshot).keys);
}

function isBlock(value: unknown): value is Block {
  return typeof value === 'object' && value !== null && typeof (value as Block).c === 'string' && Array.isArray((value as Block).ch);
}

function recordToRow(record: VersionRecord): Row {
  return [
    record.commit,
    record.blob,
    record.size,
    record.etag,
    record.contentType,
    record.metadata,
    record.updatedAt,
    record.revision,
    record.message,
    record.author.name,
    record.author.email ?? null,
  ];
}

function rowToRecord(key: string, row: Row): VersionRecord {
  const [commit, blob, size, etag, contentType, metadata, updatedAt, revision, message, name, email] = row;
  return { key, commit, blob, size, etag, contentType, metadata, updatedAt, revision, message, author: email === null ? { name } : { name, email } };
}

function entryToBlock(entry: CommitEntry): Block {
  return {
    c: entry.commit,
    p: entry.parent ?? null,
    m: entry.message,
    a: [entry.author.name, entry.author.email ?? null],
    ch: entry.changes.map((change): ChangeRow => {
      if (change.op !== 'version') return [change.op === 'delete' ? 'd' : 'f', change.key];
      const r = change.record;
      return ['v', change.key, r.blob, r.size, r.etag, r.contentType, r.metadata, r.updatedAt, r.revision];
    }),
  };
}

function blockToEntry(block: Block): CommitEntry {
  const [name, email] = block.a;
  return {
    commit: block.c,
    parent: block.p ?? undefined,
    message: block.m,
    author: email === null ? { name } : { name, email },
    changes: block.ch.map((row): KeyChange => {
      if (row[0] === 'd') return { op: 'delete', key: row[1] };
      if (row[0] === 'f') return { op: 'forget', key: row[1] };
      const [, key, blob, size, etag, contentType, metadata, updatedAt, revision] = row;
      return { op: 'version', key, record: { blob, size, etag, contentType, metadata, updatedAt, revision } };
    }),
  };
}
