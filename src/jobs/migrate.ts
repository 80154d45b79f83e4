/**
 * `migrate`: copies every object of one store into another (and their versions when asked); event
 * `migration.completed`.
 *
 * Verified: each write's etag (computed by the target from what it stored) must equal the source's. Resumable:
 * after every page of the source listing the job saves the cursor that continues it, with its counts, as its
 * progress (`GET /v1/jobs/:id`, the board); a run picked up after a crash or a shutdown continues at that page, and
 * objects the target already holds with the same content, type and metadata are skipped, not copied again.
 *
 * The target's own writes are never overwritten (the application may write there from the cutover on, while a
 * backfill or a final pass runs): each object is looked up in the target once, and copied only when the target
 * lacks the key or holds an older object (`updatedAt`) than the source's, the write conditioned on that state
 * (`ifNoneMatch: '*'`, or `ifMatch` the etag seen). A target object as new as the source's or newer, or one that
 * changes between the look and the write, is left as it is and counted in `conflictCount` (not a failure). An
 * object the source changed while it was copied is copied again (`copyCurrent`): the target stamps a copy when it
 * lands, so a copy that missed a source write would look newer than that write to a final pass.
 *
 * Objects deleted from the source while the migration runs are left out (and versions removed meanwhile, the rest
 * of the key is copied); objects written meanwhile may or may not be included, as with any copy of a live store:
 * run it again for a final pass (it only copies what changed). Versions go only into a key that has none yet, or
 * whose history shares versions with the source's (retention may have trimmed the oldest of either): the ones after
 * the newest shared version are added; a key with a history of its own is reported as a failure.
 */
import { z } from 'zod';
import { DataCorruptedError, InvalidArgumentError, NotFoundError, PreconditionFailedError } from '../providers/errors.js';
import type { ObjectInfo, StorageProvider, VersionInfo, WriteOptions } from '../providers/types.js';
import {
  COPY_WIDTH,
  Failures,
  contentFailure,
  copyObject,
  failureSchema,
  forEachLimited,
  historyOfItsOwn,
  missingVersions,
  pages,
  refusedByTarget,
  sameVersion,
  storeExpected,
  type Failure,
  type VerificationReport,
} from './copy.js';
import { allVersions, sameObject, statIfPresent, versionMessage } from '../providers/object-info.js';
import { defineJob, progressInto, storeNameSchema, storeOf, throwIfInterrupted, type JobContext } from './definition.js';

export const migratePayload = z.object({ from: storeNameSchema, to: storeNameSchema, versions: z.boolean().optional() }).strict();

export interface MigrateResult extends VerificationReport {
  from: string;
  to: string;
  objects: number;
  copied: number;
  skipped: number;
  versions: number;
  bytes: number;
  /** Objects left as the target holds them: newer there than in the source, or changed there while copied. */
  conflictCount: number;
  /** The first MAX_REPORTED_FAILURES of them. */
  conflicts: Failure[];
}

/** The progress a run saves after each page; `cursor` null = the listing is done. */
const checkpoint = z
  .object({
    cursor: z.string().nullable(),
    objects: z.number().int().nonnegative(),
    copied: z.number(),
    skipped: z.number(),
    versions: z.number(),
    bytes: z.number(),
    failureCount: z.number().default(0),
    conflictCount: z.number().default(0),
    failures: z.array(failureSchema).default([]),
    conflicts: z.array(failureSchema).default([]),
  })
  .passthrough();
type Checkpoint = z.output<typeof checkpoint>;

/** The target's state a copy was decided on, as write conditions: absent, or holding the object with this etag. */
type Expected = Pick<WriteOptions, 'ifMatch' | 'ifNoneMatch'>;

const expecting = (current: ObjectInfo | undefined): Expected => (current === undefined ? { ifNoneMatch: '*' } : { ifMatch: current.etag });

/** The versions of a key in the source and in the target, oldest first. */
interface Histories {
  source: VersionInfo[];
  target: VersionInfo[];
}

async function histories(from: StorageProvider, to: StorageProvider, key: string): Promise<Histories> {
  const source = (await allVersions(from, key)).reverse();
  return { source, target: source.length === 0 ? [] : (await allVersions(to, key)).reverse() };
}

/**
 * Whether the target's history is what copying the source's produces, stopped part way: the versions the target
 * holds that the source still has are the start of the source's history, in order (those before them are versions
 * retention trimmed from the source after they were copied).
 */
function copiedSoFar({ source, target }: Histories): boolean {
  const first = target.findIndex((version) => source.some((own) => sameVersion(own, version)));
  return first >= 0 && target.slice(first).every((version, i) => source[i] !== undefined && sameVersion(source[i], version));
}

/**
 * Whether the target's object of a key may be replaced by the source's: it is the same, or older (clocks are the
 * stores' own, so a tie keeps the target's: a conflict is reported, a write is never lost), or it is the newest
 * version of a history the migration was still copying (an earlier run stopped: the rest follow). Matching its
 * newest version by content alone would take an application's write that brings back earlier content (on
 * every-write stores a version like any other) for the migration's own.
 */
function replaceable(current: ObjectInfo, source: ObjectInfo, history: Histories | undefined): boolean {
  if (sameObject(current, source) || Date.parse(current.updatedAt) < Date.parse(source.updatedAt)) return true;
  const newest = history?.target.at(-1);
  // The current object must be that version's record itself: an application's later write of the same content is not.
  return newest !== undefined && current.versionId === newest.versionId && newest.etag === current.etag && copiedSoFar(history!);
}

/** Copies of one object while its source keeps changing under them, before the key is reported instead. */
const COPY_ROUNDS = 4;

const newerInTarget = (key: string): Failure => ({ key, reason: "left as it is: the target's object is not older than the source's" });
const changedInTarget = (key: string): Failure => ({ key, reason: "left as it is: the target's object changed while it was copied" });
const damagedInTarget = (key: string, error: Error): Failure => ({ key, reason: `not copied: the target's object is damaged (${error.message})` });
const notFoundInTarget = (key: string, error: Error): Failure => ({ key, reason: `not copied: the target answered ${error.message}` });
const changingInSource = (key: string): Failure => ({
  key,
  reason: `the target holds an earlier state: the source's object changed during each of ${COPY_ROUNDS} copies`,
});

/**
 * Copies the source's object of `key` into the target (the first write conditioned on `expected`), then again for
 * as long as the source changed while it was copied, each write conditioned on the copy before (an application
 * write into the target meanwhile stays, a conflict). A copy that missed a source write is stamped by the target
 * after it: a final pass would take it for the application's own write there and keep it. Returns the bytes
 * written, and whether the target ends up with the source's object as it was after the last copy.
 */
async function copyCurrent(
  from: StorageProvider,
  to: StorageProvider,
  key: string,
  expected: Expected,
  fence: WriteOptions['fence'],
): Promise<{ bytes: number; settled: boolean }> {
  let bytes = 0;
  for (let round = 0; round < COPY_ROUNDS; round++) {
    const { source, written } = await copyObject(from, key, to, (read) => ({
      key,
      options: { contentType: read.contentType, metadata: read.metadata, ...expected, fence },
    }));
    bytes += written.size;
    const now = await statIfPresent(from, key);
    if (now === undefined || sameObject(now, source)) return { bytes, settled: true };
    expected = { ifMatch: written.etag };
  }
  return { bytes, settled: false };
}

/**
 * Records the versions of `key` the target lacks, oldest first, each conditioned on `expected` (a recorded version
 * becomes the current object, which the next one then expects); returns how many, and what a write of the key must
 * expect then. A target with a history of its own gets none of them, reported as a failure.
 */
async function copyVersions(
  ctx: JobContext,
  from: StorageProvider,
  to: StorageProvider,
  key: string,
  history: Histories,
  failures: Failures,
  expected: Expected,
): Promise<{ recorded: number; expected: Expected }> {
  if (history.source.length === 0) return { recorded: 0, expected };
  const missing = missingVersions(history.source, history.target, ctx.job.timestamp);
  if (missing === undefined) {
    failures.add(historyOfItsOwn(key));
    return { recorded: 0, expected };
  }
  let recorded = 0;
  for (const version of missing) {
    throwIfInterrupted(ctx);
    const read = await from.read(key, { versionId: version.versionId }).catch((error: unknown) => {
      if (error instanceof NotFoundError) return undefined;
      throw error;
    });
    if (read === undefined) continue; // removed by retention since it was listed
    const { info, body } = read;
    const { contentType, metadata } = info;
    const created = await storeExpected(key, version.etag, (expectedEtag) =>
      to.createVersion(key, body, { message: versionMessage(version), author: version.author, contentType, metadata, ...expected, expectedEtag, fence: ctx.fence }),
    ).catch((error: unknown) => {
      body.destroy();
      throw error;
    });
    expected = { ifMatch: created.etag };
    recorded++;
  }
  return { recorded, expected };
}

/** Refuses a migration the job could never run (the API checks it before enqueueing). */
export function checkMigration(payload: { from: string; to: string }): void {
  if (payload.from === payload.to) throw new InvalidArgumentError(`store "${payload.from}" cannot be migrated into itself`);
}

export const migrateJob = defineJob({
  name: 'migrate',
  queue: 'maintenance',
  schema: migratePayload,
  async handle(payload, ctx) {
    checkMigration(payload);
    const from = storeOf(ctx, payload.from);
    const to = storeOf(ctx, payload.to);
    const resumed = checkpoint.safeParse(progressInto(to, ctx));
    const state: Checkpoint = resumed.success
      ? resumed.data
      : { cursor: '', objects: 0, copied: 0, skipped: 0, versions: 0, bytes: 0, failureCount: 0, conflictCount: 0, failures: [], conflicts: [] };
    const failures = Failures.resumed(state.failureCount, state.failures);
    const conflicts = Failures.resumed(state.conflictCount, state.conflicts);

    // One look at the target per object, even into one that was empty: the application may write there meanwhile.
    const migrateObject = async (item: ObjectInfo): Promise<void> => {
      let current: ObjectInfo | undefined;
      try {
        current = await statIfPresent(to, item.key);
      } catch (error) {
        // A record the target refuses as damaged is the target's failure, not the source's (`contentFailure`).
        if (!(error instanceof DataCorruptedError)) throw error;
        return failures.add(damagedInTarget(item.key, error));
      }
      const history = payload.versions ? await histories(from, to, item.key) : undefined;
      if (current !== undefined && !replaceable(current, item, history)) {
        conflicts.add(newerInTarget(item.key));
        return;
      }
      let expected = expecting(current);
      if (history !== undefined) {
        const copied = await copyVersions(ctx, from, to, item.key, history, failures, expected);
        state.versions += copied.recorded;
        // The newest recorded version is the current object now; its type and metadata are the target's to say.
        if (copied.recorded > 0) [current, expected] = [await statIfPresent(to, item.key), copied.expected];
      }
      if (current !== undefined && sameObject(current, item)) {
        state.skipped++;
        return;
      }
      const copied = await copyCurrent(from, to, item.key, expected, ctx.fence);
      state.copied++;
      state.bytes += copied.bytes;
      if (!copied.settled) failures.add(changingInSource(item.key));
    };

    if (state.cursor !== null) {
      for await (const page of pages(from, { cursor: state.cursor === '' ? undefined : state.cursor })) {
        throwIfInterrupted(ctx);
        await forEachLimited(page.items, COPY_WIDTH, async (item) => {
          throwIfInterrupted(ctx);
          try {
            await migrateObject(item);
          } catch (error) {
            if (error instanceof NotFoundError) {
              // Deleted or replaced since it was listed: left out, as any object changed meanwhile may be. While the
              // source still holds the object listed, the NOT_FOUND was the target's (a git store's branch removed).
              const now = await statIfPresent(from, item.key);
              if (now === undefined || !sameObject(now, item) || now.updatedAt !== item.updatedAt) return;
              return failures.add(notFoundInTarget(item.key, error));
            }
            if (error instanceof PreconditionFailedError) return conflicts.add(changedInTarget(item.key));
            const failure = contentFailure(error, item) ?? refusedByTarget(error, { key: item.key, etag: item.etag });
            if (failure === undefined) throw error;
            failures.add(failure);
          }
        });
        state.objects += page.items.length;
        state.cursor = page.next ?? null;
        state.failureCount = failures.count;
        state.conflictCount = conflicts.count;
        state.failures = failures.items;
        state.conflicts = conflicts.items;
        await ctx.reportProgress?.({ phase: 'copy', ...state });
      }
    }

    const result: MigrateResult = {
      from: payload.from,
      to: payload.to,
      objects: state.objects,
      copied: state.copied,
      skipped: state.skipped,
      versions: state.versions,
      bytes: state.bytes,
      conflictCount: conflicts.count,
      conflicts: conflicts.items,
      ...failures.report(),
    };
    return { result, event: { type: 'migration.completed', store: payload.to, data: result } };
  },
});
