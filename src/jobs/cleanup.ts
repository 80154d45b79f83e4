/**
 * `cleanup` (`CLEANUP_CRON`, hourly): the housekeeping of the whole service; event `cleanup.completed`.
 *
 * - Version retention, per store: of every current key's versions, the newest `VERSION_RETENTION_COUNT` are kept,
 *   and with `VERSION_RETENTION_DAYS` > 0 none older than that; the newest version, and the one the current
 *   object was made from, are always kept. Needs the provider's `deleteVersion`: a store without it (git, whose
 *   history cannot be rewritten) is counted in `skipped`. Versions of keys that no longer have a current object
 *   are not reachable through a listing and stay until `delete` with `allVersions`.
 * - Staging blobs older than `STAGING_TTL` whose job is gone or completed (`staged-owners.ts`): bodies of jobs that
 *   never got added or ran to completion without releasing them. A body whose job is still to run (waiting in a
 *   long backlog, delayed, active, or failed and retryable from the board) is kept, and counted in `stagingKept`.
 * - BullMQ jobs past their retention (`*_JOBS_KEEP_SECONDS`; webhook deliveries: `DELIVERY_RETENTION`): completed
 *   jobs are trimmed when another job completes, so a queue that went quiet keeps them until this runs.
 * - Events past `EVENTS_MAXLEN`: `XADD` trims approximately (whole stream nodes); this trims exactly.
 *
 * With `store`, only that store's versions are cleaned; without, every store and the service-wide parts. Every
 * step is idempotent: a run interrupted by a shutdown is simply run again.
 */
import { Queue } from 'bullmq';
import { z } from 'zod';
import { streamGroups } from '../events/bus.js';
import { isWebhookQueueName } from '../events/webhook-dispatcher.js';
import { DELIVERY_RETENTION } from '../events/webhooks.js';
import type { StorageProvider } from '../providers/types.js';
import { pages } from './copy.js';
import { allVersions } from '../providers/object-info.js';
import {
  defineJob,
  JobInterruptedError,
  maintenanceOf,
  storeNameSchema,
  storeOf,
  throwIfInterrupted,
  type JobContext,
  type MaintenanceDeps,
} from './definition.js';
import { queueOfJobId } from './job-id.js';
import { StagedOwners } from './staged-owners.js';
import { VersionPins } from './version-pins.js';
import { removeStaged, STAGING_PREFIX } from './staging.js';

export const cleanupPayload = z.object({ store: storeNameSchema.optional() }).strict();

export interface StoreRetention {
  keys: number;
  versionsDeleted: number;
  /** Expired versions kept because a job still to run reads them (a restore, a copy of that version). */
  versionsKeptForJobs?: number;
  /** Why the store's versions were left alone. */
  skipped?: string;
  /** Leftovers of interrupted writes removed (disk stores' `.tmp-*` files older than `STAGING_TTL`). */
  leftoversRemoved?: number;
  /** Why retention stopped in this store (down): the counts are what it did until then. */
  error?: string;
}

export interface CleanupResult {
  stores: Record<string, StoreRetention>;
  versionsDeleted: number;
  /** Stores whose versions could not be cleaned (no `deleteVersion`). */
  skipped: number;
  /** Stores whose retention failed (`stores.<name>.error`); the other stores and the service-wide parts went on. */
  failed: number;
  stagingRemoved: number;
  /** Staging blobs past `STAGING_TTL` kept because their job is still to run. */
  stagingKept: number;
  /** Partial uploads a crashed process left in the staging store (`removeLeftovers`, disk staging). */
  stagingLeftoversRemoved: number;
  /** Why the staging area was not swept (its store down): the next cleanup tries again. */
  stagingError?: string;
  jobsRemoved: number;
  eventsTrimmed: number;
}

const DAY_MS = 24 * 3600 * 1000;
/** `queue.clean` removes at most this many jobs per call; it is called until a call removes fewer. */
const CLEAN_BATCH = 1000;

async function applyRetention(ctx: JobContext, name: string, provider: StorageProvider, retention: StoreRetention): Promise<void> {
  const deps = maintenanceOf(ctx);
  const { settings } = deps;
  const pins = new VersionPins(deps.redis, deps.prefix);
  const deleteVersion = provider.deleteVersion?.bind(provider);
  if (deleteVersion === undefined) {
    retention.skipped = `${provider.kind} stores cannot delete single versions`;
    return;
  }
  const cutoff = settings.versionRetentionDays > 0 ? Date.now() - settings.versionRetentionDays * DAY_MS : undefined;
  for await (const page of pages(provider, { limit: 1000 })) {
    throwIfInterrupted(ctx);
    for (const object of page.items) {
      retention.keys++;
      const versions = await allVersions(provider, object.key);
      // Newest first: index 0 is the newest and always stays.
      const expired = versions.filter(
        (version, i) =>
          i > 0 &&
          version.versionId !== object.versionId &&
          (i >= settings.versionRetentionCount || (cutoff !== undefined && Date.parse(version.createdAt) < cutoff)),
      );
      for (const { versionId } of expired) {
        const pinnedBy = await pins.pinnedBy({ store: name, key: object.key, versionId });
        if (pinnedBy !== undefined && (await jobStillNeedsIt(deps, pinnedBy))) {
          retention.versionsKeptForJobs = (retention.versionsKeptForJobs ?? 0) + 1;
          continue;
        }
        await deleteVersion(object.key, versionId);
        retention.versionsDeleted++;
      }
    }
    await ctx.reportProgress?.({ phase: 'versions', keys: retention.keys, versionsDeleted: retention.versionsDeleted });
  }
}

/**
 * `applyRetention` in one store of a cleanup of them all: a store that fails (down) is reported and logged, and the
 * other stores and the service-wide parts go on — one store's outage would otherwise stop every hourly cleanup,
 * staging and events included, for as long as it lasts. The next cleanup tries it again.
 */
async function applyRetentionOrReport(ctx: JobContext, name: string, provider: StorageProvider): Promise<StoreRetention> {
  const retention: StoreRetention = { keys: 0, versionsDeleted: 0 };
  try {
    await applyRetention(ctx, name, provider, retention);
  } catch (error) {
    if (error instanceof JobInterruptedError) throw error;
    ctx.log.warn({ err: error, store: name }, 'version retention failed in this store: the next cleanup tries again');
    retention.error = (error as Error).message;
  }
  return retention;
}

/** Whether a job (the owner of a staged body, or of a pinned version) may still read what it named. */
async function jobStillNeedsIt(deps: MaintenanceDeps, jobId: string): Promise<boolean> {
  const queue = deps.queues.find((candidate) => candidate.name === queueOfJobId(jobId));
  const state = queue === undefined ? 'unknown' : await queue.getJobState(jobId);
  return state !== 'unknown' && state !== 'completed';
}

async function removeStaleStaging(ctx: JobContext, deps: MaintenanceDeps): Promise<{ removed: number; kept: number }> {
  const cutoff = Date.now() - deps.settings.stagingTtlSeconds * 1000;
  const owners = new StagedOwners(deps.redis, deps.prefix);
  const counts = { removed: 0, kept: 0 };
  for await (const page of pages(deps.stagingProvider, { prefix: STAGING_PREFIX, limit: 1000 })) {
    throwIfInterrupted(ctx);
    for (const blob of page.items) {
      if (Date.parse(blob.updatedAt) >= cutoff) continue;
      const owner = await owners.ownerOf(blob.key);
      if (owner !== undefined && (await jobStillNeedsIt(deps, owner))) {
        counts.kept++;
        continue;
      }
      // As `Staging.release` does: the note first, so that a failure in between leaves an orphan body, swept next time.
      await owners.forget(blob.key);
      await removeStaged(deps.stagingProvider, blob.key);
      counts.removed++;
    }
  }
  return counts;
}

/**
 * What interrupted writes left in `provider`, older than the staging TTL; undefined where it keeps none. A sweep that
 * fails (a store down, a key without the right to list uploads) is logged and left to the next cleanup: the rest of
 * the cleanup still runs.
 */
async function sweepLeftovers(ctx: JobContext, provider: StorageProvider, name: string, ttlSeconds: number): Promise<number | undefined> {
  try {
    return await provider.removeLeftovers?.(ttlSeconds * 1000);
  } catch (error) {
    ctx.log.warn({ err: error, store: name }, 'leftovers of interrupted writes not removed: the next cleanup tries again');
    return undefined;
  }
}

/**
 * The webhook delivery queues, found by their consumer groups on the events stream (a group is named as its URL's
 * queue): also those of URLs no process lists any more, whose queues no one else would ever trim.
 */
async function webhookQueues(deps: MaintenanceDeps, streamKey: string): Promise<Queue[]> {
  const names = (await streamGroups(deps.redis, streamKey)).map((group) => group.name);
  return names.filter(isWebhookQueueName).map((name) => new Queue(name, { connection: deps.redis, prefix: deps.prefix }));
}

async function removeOldJobs(deps: MaintenanceDeps, streamKey: string): Promise<number> {
  const { completedJobAgeSeconds, failedJobAgeSeconds } = deps.settings;
  const webhooks = await webhookQueues(deps, streamKey);
  try {
    const jobs = await removeOldJobsOf(deps.queues, completedJobAgeSeconds, failedJobAgeSeconds);
    return jobs + (await removeOldJobsOf(webhooks, DELIVERY_RETENTION.completedAgeSeconds, DELIVERY_RETENTION.failedAgeSeconds));
  } finally {
    await Promise.allSettled(webhooks.map((queue) => queue.close()));
  }
}

async function removeOldJobsOf(queues: readonly Queue[], completedJobAgeSeconds: number, failedJobAgeSeconds: number): Promise<number> {
  let removed = 0;
  for (const queue of queues) {
    for (const [state, ageSeconds] of [['completed', completedJobAgeSeconds], ['failed', failedJobAgeSeconds]] as const) {
      for (;;) {
        const ids = await queue.clean(ageSeconds * 1000, CLEAN_BATCH, state);
        removed += ids.length;
        if (ids.length < CLEAN_BATCH) break;
      }
    }
  }
  return removed;
}

export const cleanupJob = defineJob({
  name: 'cleanup',
  queue: 'maintenance',
  schema: cleanupPayload,
  async handle(payload, ctx) {
    const deps = maintenanceOf(ctx);
    const names = payload.store === undefined ? [...ctx.stores.keys()] : [payload.store];
    const result: CleanupResult = {
      stores: {},
      versionsDeleted: 0,
      skipped: 0,
      failed: 0,
      stagingRemoved: 0,
      stagingKept: 0,
      stagingLeftoversRemoved: 0,
      jobsRemoved: 0,
      eventsTrimmed: 0,
    };
    for (const name of names) {
      const provider = storeOf(ctx, name);
      let retention: StoreRetention = { keys: 0, versionsDeleted: 0 };
      // One store asked for: its failure is the job's (retried).
      if (payload.store !== undefined) await applyRetention(ctx, name, provider, retention);
      else retention = await applyRetentionOrReport(ctx, name, provider);
      const leftovers = await sweepLeftovers(ctx, provider, name, deps.settings.stagingTtlSeconds);
      if (leftovers !== undefined) retention.leftoversRemoved = leftovers;
      result.stores[name] = retention;
      result.versionsDeleted += retention.versionsDeleted;
      if (retention.skipped !== undefined) result.skipped++;
      if (retention.error !== undefined) result.failed++;
    }
    if (payload.store === undefined) {
      await ctx.reportProgress?.({ phase: 'staging', versionsDeleted: result.versionsDeleted });
      // As a store's retention: a staging store that is down is reported, and the jobs and events are still cleaned.
      try {
        const staging = await removeStaleStaging(ctx, deps);
        result.stagingRemoved = staging.removed;
        result.stagingKept = staging.kept;
        result.stagingLeftoversRemoved = (await sweepLeftovers(ctx, deps.stagingProvider, 'staging', deps.settings.stagingTtlSeconds)) ?? 0;
      } catch (error) {
        if (error instanceof JobInterruptedError) throw error;
        ctx.log.warn({ err: error }, 'the staging area was not swept: the next cleanup tries again');
        result.stagingError = (error as Error).message;
      }
      await new VersionPins(deps.redis, deps.prefix).sweep((jobId) => jobStillNeedsIt(deps, jobId));
      await ctx.reportProgress?.({ phase: 'jobs', versionsDeleted: result.versionsDeleted });
      result.jobsRemoved = await removeOldJobs(deps, ctx.bus.streamKey);
      result.eventsTrimmed = Number(await deps.redis.xtrim(ctx.bus.streamKey, 'MAXLEN', deps.settings.eventsMaxLen));
    }
    return { result, event: { type: 'cleanup.completed', ...(payload.store !== undefined ? { store: payload.store } : {}), data: result } };
  },
});
