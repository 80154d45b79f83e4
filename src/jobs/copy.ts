/**
 * Moving content between stores for the maintenance jobs (backup, restore-backup, migrate), verified end to end
 * with the one identity the contract guarantees on every provider: etag = sha256 of the content.
 *
 * - A copy compares the etag the target computed while storing with the etag of what was read: a body damaged on
 *   the way is caught at once.
 * - `verifyStored` reads an object back and hashes it here, trusting neither provider's recorded etag: that is
 *   what finds content damaged at rest (a disk provider re-hashes only records of up to 64 KiB it reads whole).
 * - `verifiedBody` checks content *before* it is written anywhere (restoring from a backup must not put a damaged
 *   blob into a live store): small bodies are held in memory once, larger ones are read twice.
 */
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { z } from 'zod';
import { HashingStream, readAll, sha256Hex } from '../providers/body.js';
import { DataCorruptedError, InvalidArgumentError, InvalidKeyError, NotFoundError, PayloadTooLargeError, UnexpectedContentError } from '../providers/errors.js';
import { versionMessage } from '../providers/object-info.js';
import type { Body, ObjectInfo, StorageProvider, VersionInfo, WriteOptions } from '../providers/types.js';

/** Items copied in parallel within a page: enough to hide S3 round trips, few enough for a shared 2-core worker. */
export const COPY_WIDTH = 8;
/** Objects per listing page, and so per saved checkpoint of a resumable job. */
export const PAGE_SIZE = 200;
/** Bodies up to this size are verified in memory before being written; larger ones are read twice. */
const VERIFY_IN_MEMORY_BYTES = 8 * 1024 * 1024;

/** A copy or check that did not hold: reported in the job's result and event, never thrown. */
export const failureSchema = z.object({ key: z.string(), etag: z.string().optional(), versionId: z.string().optional(), reason: z.string() });
export type Failure = z.output<typeof failureSchema>;

/** Failures kept in a result (the count is always exact). */
export const MAX_REPORTED_FAILURES = 100;

/** What a copying job's result says of its checks. */
export interface VerificationReport {
  verified: boolean;
  failureCount: number;
  /** The first MAX_REPORTED_FAILURES of them. */
  failures: Failure[];
}

export class Failures {
  count = 0;
  readonly items: Failure[] = [];

  /**
   * The failures an earlier run of a resumable job saved with its progress (`count` and `items` as they were): a
   * resumed run names them too, not only counts them.
   */
  static resumed(count: number, items: readonly Failure[]): Failures {
    const failures = new Failures();
    failures.count = count;
    failures.items.push(...items.slice(0, MAX_REPORTED_FAILURES));
    return failures;
  }

  add(failure: Failure): void {
    this.count++;
    if (this.items.length < MAX_REPORTED_FAILURES) this.items.push(failure);
  }

  report(): VerificationReport {
    return { verified: this.count === 0, failureCount: this.count, failures: this.items };
  }
}

/**
 * Runs `task` over `items`, at most `width` at once, in order of start. After a failure it starts no more and waits
 * for those running before it rethrows the first error: a job interrupted for a shutdown goes back to the queue at
 * once, and a task still writing then would land what the next run records too.
 */
export async function forEachLimited<T>(items: readonly T[], width: number, task: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const lanes = await Promise.allSettled(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      try {
        while (next < items.length && !failed) await task(items[next++]!);
      } catch (error) {
        failed = true;
        throw error;
      }
    }),
  );
  const failure = lanes.find((lane) => lane.status === 'rejected');
  if (failure !== undefined) throw failure.reason;
}

/** Pages of a listing; `at` is the cursor that produced the page, so a job can resume at that page. */
export async function* pages(
  provider: StorageProvider,
  opts: { prefix?: string; cursor?: string; limit?: number } = {},
): AsyncGenerator<{ items: ObjectInfo[]; at?: string; next?: string }> {
  let cursor = opts.cursor;
  do {
    const page = await provider.list({ prefix: opts.prefix, cursor, limit: opts.limit ?? PAGE_SIZE });
    yield { items: page.items, at: cursor, next: page.cursor };
    cursor = page.cursor;
  } while (cursor !== undefined);
}

/** The sha256 of what `provider` serves for `key` now, hashed here. */
export async function hashStored(provider: StorageProvider, key: string, versionId?: string): Promise<{ etag: string; size: number }> {
  const { body } = await provider.read(key, versionId === undefined ? undefined : { versionId });
  const hashing = new HashingStream();
  await pipeline(body, hashing, new Writable({ write: (_chunk, _encoding, done) => done() }));
  return { etag: hashing.etag, size: hashing.size };
}

/** Reads `key` back and compares its sha256 with `etag`; a failure says why, undefined means it holds. */
export async function verifyStored(provider: StorageProvider, key: string, etag: string): Promise<Failure | undefined> {
  try {
    const stored = await hashStored(provider, key);
    return stored.etag === etag ? undefined : { key, etag, reason: `reads back with sha256 ${stored.etag}` };
  } catch (error) {
    if (error instanceof NotFoundError) return { key, etag, reason: 'missing' };
    // A store that checks what it serves (disk, for small records) refuses damaged content itself.
    if (error instanceof DataCorruptedError) return { key, etag, reason: 'damaged where it is stored' };
    throw error;
  }
}

export class ContentMismatch extends Error {
  /** `actual` undefined: the store refused to serve the content as damaged (`DataCorruptedError`). */
  constructor(
    readonly key: string,
    readonly expected: string,
    readonly actual?: string,
  ) {
    super(actual === undefined ? `"${key}" is damaged where it is stored (expected sha256 ${expected})` : `"${key}" has sha256 ${actual}, expected ${expected}`);
    this.name = 'ContentMismatch';
  }
}

/** The content of `key`, checked against `etag` before the caller writes it anywhere (`ContentMismatch` if not). */
export async function verifiedBody(provider: StorageProvider, key: string, etag: string, size: number): Promise<Body> {
  try {
    return await checkedBody(provider, key, etag, size);
  } catch (error) {
    if (error instanceof DataCorruptedError) throw new ContentMismatch(key, etag);
    throw error;
  }
}

async function checkedBody(provider: StorageProvider, key: string, etag: string, size: number): Promise<Body> {
  if (size <= VERIFY_IN_MEMORY_BYTES) {
    const { body } = await provider.read(key);
    const content = await readAll(body);
    const actual = sha256Hex(content);
    if (actual !== etag) throw new ContentMismatch(key, etag, actual);
    return content;
  }
  const stored = await hashStored(provider, key);
  if (stored.etag !== etag) throw new ContentMismatch(key, etag, stored.etag);
  return (await provider.read(key)).body;
}

/**
 * Stores content that must hash to `etag` through `store`, a write or createVersion given it as `expectedEtag`:
 * the store refuses other content before anything changes, so a damaged read (bit rot a store does not re-hash, a
 * second read of a large blob that differs from the first) never replaces a good object. `ContentMismatch` if so.
 */
export async function storeExpected<T extends { etag: string }>(key: string, etag: string, store: (expectedEtag: string) => Promise<T>): Promise<T> {
  let stored: T;
  try {
    stored = await store(etag);
  } catch (error) {
    if (error instanceof UnexpectedContentError) throw new ContentMismatch(key, etag, error.actual);
    throw error;
  }
  // Every provider checks `expectedEtag` (the contract); a store that did not is caught here, if only afterwards.
  if (stored.etag !== etag) throw new ContentMismatch(key, etag, stored.etag);
  return stored;
}

/**
 * Copies `key` (or one of its versions) from `from` into `to`, where `place` says for what was read (the object
 * may have changed since it was listed; it may also refuse it by throwing). Returns what was read and what was
 * written; `ContentMismatch` when the target stored something else than what was read.
 */
export async function copyObject(
  from: StorageProvider,
  key: string,
  to: StorageProvider,
  place: (source: ObjectInfo) => { key: string; options?: WriteOptions },
  versionId?: string,
): Promise<{ source: ObjectInfo; written: ObjectInfo }> {
  const { info: source, body } = await from.read(key, versionId === undefined ? undefined : { versionId });
  let written: ObjectInfo;
  try {
    const at = place(source);
    written = await storeExpected(at.key, source.etag, (expectedEtag) => to.write(at.key, body, { ...at.options, expectedEtag }));
  } catch (error) {
    body.destroy();
    throw error;
  }
  return { source, written };
}

/**
 * The failure to report for an item whose copy threw `error`, when it is about that item's content (what was stored
 * differs from what was read, or the source refused its content as damaged); undefined for any other error.
 */
export function contentFailure(error: unknown, item: { key: string; etag: string }): Failure | undefined {
  if (error instanceof ContentMismatch) return { key: item.key, etag: error.expected, reason: error.message };
  if (error instanceof DataCorruptedError) return { key: item.key, etag: item.etag, reason: `not copied: ${error.message}` };
  return undefined;
}

/**
 * The failure of an item the target refuses to hold (a key, content type, metadata, message or author another kind
 * takes and it does not; a body over its size limit); undefined for any other error.
 */
export function refusedByTarget(error: unknown, item: { key: string; etag?: string; versionId?: string }): Failure | undefined {
  if (error instanceof InvalidKeyError || error instanceof InvalidArgumentError || error instanceof PayloadTooLargeError) {
    return { ...item, reason: `not copied: the target refuses it (${error.message})` };
  }
  return undefined;
}

/** Whether `target` is a record of the `source` version: same content and message (ids and times are each store's). */
export function sameVersion(source: { versionId: string; etag: string; message?: string }, target: Pick<VersionInfo, 'etag' | 'message'>): boolean {
  return source.etag === target.etag && versionMessage(source) === target.message;
}

/**
 * Which of `source`'s versions (oldest first) still have to be recorded in a target whose versions of the key are
 * `target` (oldest first): those after the newest target version the source holds too. The histories are matched
 * where they overlap, not from their first versions, since retention trims the oldest of either; target versions
 * after the last shared one are its own (a git store records each write) and stay. Undefined when they share none:
 * the target has a history of its own (it is not overwritten with another one).
 *
 * Versions repeat (A, B, A: a revert with the same message), so the newest shared version may match several places
 * in the source. It is placed where the most of the target's history before it lines up, and among those at the
 * newest place it can be a record of: not one created after the target's record was (a copy is made after what it
 * copies). A target that holds the first A of A, B, A from before B and the second A were made thus lacks them; one
 * that holds a complete copy, trimmed by retention to its newest versions, lacks nothing.
 */
export function missingVersions<V extends { versionId: string; etag: string; message?: string; createdAt?: string }>(
  source: readonly V[],
  target: readonly Pick<VersionInfo, 'etag' | 'message' | 'createdAt'>[],
  /**
   * When the copying job began (ms): target versions all recorded since, matching the source's first ones, are that
   * job's own from a run stopped part way — the start of the source's history, whatever repeats in it.
   */
  copyingSince?: number,
): V[] | undefined {
  if (target.length === 0) return [...source];
  const ownSoFar =
    copyingSince !== undefined &&
    target.every((version, i) => Date.parse(version.createdAt) >= copyingSince && source[i] !== undefined && sameVersion(source[i], version));
  if (ownSoFar) return source.slice(target.length);
  for (let i = target.length - 1; i >= 0; i--) {
    const recordedAt = Date.parse(target[i]!.createdAt);
    const madeBefore = (version: V) => !(Date.parse(version.createdAt ?? '') > recordedAt);
    // Clocks of two stores may disagree: when no place passes the time check, every place is considered.
    const shared = bestAlignment(source, target, i, madeBefore) ?? bestAlignment(source, target, i, () => true);
    if (shared !== undefined) return source.slice(shared + 1);
  }
  return undefined;
}

/**
 * The newest place in `source` for `target[i]` where the longest run of the target's versions up to it lines up with
 * the source's, among places `allowed` admits; undefined when there is none.
 */
function bestAlignment<V extends { versionId: string; etag: string; message?: string }>(
  source: readonly V[],
  target: readonly Pick<VersionInfo, 'etag' | 'message'>[],
  i: number,
  allowed: (version: V) => boolean,
): number | undefined {
  let best: number | undefined;
  let longest = 0;
  for (let at = source.length - 1; at >= 0; at--) {
    if (!allowed(source[at]!)) continue;
    let run = 0;
    while (run <= Math.min(at, i) && sameVersion(source[at - run]!, target[i - run]!)) run++;
    if (run > longest) [best, longest] = [at, run];
    if (longest === i + 1) break; // the whole of the target's history up to i: no place does better
  }
  return best;
}

/** The failure of a key whose versions were not copied because the target has a history of its own. */
export const historyOfItsOwn = (key: string): Failure => ({ key, reason: 'versions not copied: the target has a version history of its own' });
