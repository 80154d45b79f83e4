/**
 * `migrate`: copies every object of one store into another (and their versions when asked); event
 * `migration.completed`.
 *
 * Verified: each write's etag (computed by the target from what it stored) must equal the source's. Resumable:
 * after every page of the source listing the job saves the cursor that continues it, with its counts, as its
 * progress (`GET /v1/jobs/:id`, the board); a run picked up after a crash or a shutdown continues at that page, and
 * objects the target already holds with the same content, type and metadata are skipped, not copied again.
 * Objects deleted from the source while the migration runs are left out (and versions removed meanwhile, the rest
 * of the key is copied); objects written meanwhile may or may not be included, as with any copy of a live store:
 * run it again for a final pass (it only copies what changed). Versions go only into a key that has none yet, or
 * whose history shares versions with the source's (retention may have trimmed the oldest of either): the ones after
 * the newest shared version are added; a key with a history of its own is reported as a failure.
 */
import { z } from 'zod';
import { InvalidArgumentError, NotFoundError } from '../providers/errors.js';
import type { ObjectInfo, StorageProvider } from '../providers/types.js';
import { COPY_WIDTH, ContentMismatch, Failures, copyObject, forEachLimited, historyOfItsOwn, missingVersions, pages, type VerificationReport } from './copy.js';
import { allVersions, sameObject, statIfPresent, versionMessage } from '../providers/object-info.js';
import { defineJob, storeNameSchema, storeOf, throwIfInterrupted, type JobContext } from './definition.js';

export const migratePayload = z.object({ from: storeNameSchema, to: storeNameSchema, versions: z.boolean().optional() }).strict();

export interface MigrateResult extends VerificationReport {
  from: string;
  to: string;
  objects: number;
  copied: number;
  skipped: number;
  versions: number;
  bytes: number;
}

/**
 * The progress a run saves after each page; `cursor` null = the listing is done. `targetWasEmpty`: the target held
 * nothing when the job began, so only the page a resumed run starts with can hold objects already copied.
 */
const checkpoint = z
  .object({
    cursor: z.string().nullable(),
    targetWasEmpty: z.boolean().default(false),
    objects: z.number().int().nonnegative(),
    copied: z.number(),
    skipped: z.number(),
    versions: z.number(),
    bytes: z.number(),
    failureCount: z.number().default(0),
  })
  .passthrough();
type Checkpoint = z.output<typeof checkpoint>;

/**
 * Records the versions of `key` the target lacks, oldest first; returns how many. A target with a history of its
 * own gets none of them, reported as a failure.
 */
async function copyVersions(ctx: JobContext, from: StorageProvider, to: StorageProvider, key: string, failures: Failures): Promise<number> {
  const source = (await allVersions(from, key)).reverse();
  if (source.length === 0) return 0;
  const missing = missingVersions(source, (await allVersions(to, key)).reverse());
  if (missing === undefined) {
    failures.add(historyOfItsOwn(key));
    return 0;
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
    const created = await to.createVersion(key, body, {
      message: versionMessage(version),
      author: version.author,
      contentType: info.contentType,
      metadata: info.metadata,
    });
    if (created.etag !== version.etag) throw new ContentMismatch(key, version.etag, created.etag);
    recorded++;
  }
  return recorded;
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
    const resumed = checkpoint.safeParse(ctx.job.progress);
    const state: Checkpoint = resumed.success
      ? resumed.data
      : { cursor: '', targetWasEmpty: (await to.list({ limit: 1 })).items.length === 0, objects: 0, copied: 0, skipped: 0, versions: 0, bytes: 0, failureCount: 0 };
    // Per object, a look at the target saves copying what is already there; into a target that was empty it is
    // needed only on the page where a resumed run picks up.
    let lookFirst = !state.targetWasEmpty || resumed.success;
    const failures = new Failures();
    failures.count = state.failureCount;

    const migrateObject = async (item: ObjectInfo): Promise<void> => {
      const versions = payload.versions ? await copyVersions(ctx, from, to, item.key, failures) : 0;
      state.versions += versions;
      // Where recording a version also sets the current object (git), the newest one may already be it.
      const current = lookFirst || versions > 0 ? await statIfPresent(to, item.key) : undefined;
      if (current !== undefined && sameObject(current, item)) {
        state.skipped++;
        return;
      }
      const { written } = await copyObject(from, item.key, to, (source) => ({
        key: item.key,
        options: { contentType: source.contentType, metadata: source.metadata },
      }));
      state.copied++;
      state.bytes += written.size;
    };

    if (state.cursor !== null) {
      for await (const page of pages(from, { cursor: state.cursor === '' ? undefined : state.cursor })) {
        throwIfInterrupted(ctx);
        await forEachLimited(page.items, COPY_WIDTH, async (item) => {
          throwIfInterrupted(ctx);
          try {
            await migrateObject(item);
          } catch (error) {
            if (error instanceof NotFoundError) return; // deleted since it was listed
            if (!(error instanceof ContentMismatch)) throw error;
            failures.add({ key: item.key, etag: error.expected, reason: error.message });
          }
        });
        state.objects += page.items.length;
        state.cursor = page.next ?? null;
        lookFirst = !state.targetWasEmpty;
        state.failureCount = failures.count;
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
      ...failures.report(),
    };
    return { result, event: { type: 'migration.completed', store: payload.to, data: result } };
  },
});
