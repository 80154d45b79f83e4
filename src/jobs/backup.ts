/**
 * `backup`: an incremental, verified copy of one store's current objects (and versions when asked) into a backup
 * store, described by a manifest (layout in `manifest.ts`); event `backup.completed`.
 *
 * - Incremental: content is stored once per etag. A blob named in the newest verified manifest, or found in the
 *   backup store with the right etag, is not copied again; only objects whose content changed cost a copy.
 * - Verified: every blob this run copied, and every blob it found that the previous manifest does not vouch for
 *   (left by an interrupted run), is read back from the backup store and hashed. `verify: 'all'` re-reads every
 *   blob the manifest needs (a scrub). A blob that fails is reported (`verified: false`, with its keys) and
 *   removed, so the next run copies it again.
 * - No backup of the backup store's backups: a store is not backed up into itself, the schedule skips
 *   `BACKUP_STORE`, and keys of the backup layout (`isBackupKey`) are left out, and counted, when `BACKUP_STORE` is
 *   backed up elsewhere. Any other store is backed up whole — one used as an explicit `target` too, backups and
 *   all: in a store that is not `BACKUP_STORE` such keys may be a user's data.
 * - Retention: the newest `BACKUP_KEEP` manifests are kept; older ones are deleted, then blobs no kept manifest
 *   needs. One backup or restore of a store's backups at a time (`withStoreLock`), so that pruning never removes a
 *   blob that a concurrent run counts on. A kept manifest that cannot be read (damaged at rest) vouches for nothing
 *   and stops the pruning of blobs while it is kept; it is reported, and it never stops later backups.
 * - Resumable: the manifest id is saved in the job's progress at once; a run picked up after a crash reuses it and
 *   finds what the first run copied in the backup store.
 * - Never of a fallback: a hybrid store whose cold tier is down lists and reads its backup tier, which may lag,
 *   and such a manifest (incomplete, stale, yet counted toward `BACKUP_KEEP`) would push out complete ones. A
 *   listing, read or stat the source answers from its backup tier (`tier` in the info) fails the run as
 *   unavailable, before any manifest is written: the worker retries it later.
 */
import { z } from 'zod';
import { DataCorruptedError, InvalidArgumentError, NotFoundError, ProviderUnavailableError } from '../providers/errors.js';
import type { ObjectInfo, StorageProvider } from '../providers/types.js';
import { mintAfter, newVersionId } from '../providers/version-id.js';
import { passFence } from '../providers/fence.js';
import { COPY_WIDTH, Failures, contentFailure, failureSchema, copyObject, forEachLimited, pages, verifyStored, type VerificationReport } from './copy.js';
import { allVersions, statIfPresent } from '../providers/object-info.js';
import { defineJob, maintenanceOf, storeNameSchema, storeOf, throwIfInterrupted, type JobContext } from './definition.js';
import {
  blobKey,
  blobPrefix,
  isBackupKey,
  listManifests,
  parseManifestKey,
  manifestEtags,
  readManifest,
  writeManifest,
  type Manifest,
  type ManifestObject,
  type ManifestVersion,
} from './manifest.js';
import { withStoreLock } from './store-lock.js';

export const backupPayload = z
  .object({
    store: storeNameSchema,
    /** The backup store; `BACKUP_STORE` when left out. */
    target: storeNameSchema.optional(),
    versions: z.boolean().optional(),
    /** `copied` (default): blobs new in this run; `all`: every blob the manifest needs. */
    verify: z.enum(['copied', 'all']).optional(),
  })
  .strict();

export interface BackupResult extends VerificationReport {
  store: string;
  target: string;
  manifest: string;
  manifestId: string;
  objects: number;
  versions: number;
  copied: number;
  skipped: number;
  bytes: number;
  /** Blobs read back and hashed. */
  checked: number;
  manifestsRemoved: number;
  blobsRemoved: number;
  /** Keys of the backup layout left out: only in a backup of the backup store. */
  backupKeysLeftOut: number;
}

const savedRun = z.object({ manifestId: z.string(), at: z.string() }).passthrough();

/** A run's result once its manifest is written, before pruning: saved with the progress of its `prune` phase. */
const writtenResult = z.object({
  store: z.string(),
  target: z.string(),
  manifest: z.string(),
  manifestId: z.string(),
  objects: z.number(),
  versions: z.number(),
  copied: z.number(),
  skipped: z.number(),
  bytes: z.number(),
  checked: z.number(),
  failureCount: z.number(),
  failures: z.array(failureSchema),
  backupKeysLeftOut: z.number(),
});
type WrittenResult = z.output<typeof writtenResult>;
const savedWritten = z.object({ phase: z.literal('prune'), written: writtenResult }).passthrough();

interface Run {
  store: string;
  targetName: string;
  source: StorageProvider;
  target: StorageProvider;
  versions: boolean;
  verifyAll: boolean;
  /** The source is the backup store: its backup layout is left out. */
  skipBackupKeys: boolean;
}

/** `info` of what the source served, refused when its backup tier served it (its cold tier down: it may lag). */
function fromPrimary<T extends ObjectInfo>(run: Run, info: T): T {
  if (info.tier === 'backup') {
    throw new ProviderUnavailableError(`store "${run.store}" served "${info.key}" from its backup tier, not backed up now`);
  }
  return info;
}

/** The store a backup of `payload.store` goes into; refuses none, or the store itself (the API checks it too). */
export function backupTarget(payload: { store: string; target?: string }, backupStore: string | undefined): string {
  const target = payload.target ?? backupStore;
  if (target === undefined) throw new InvalidArgumentError('backup needs a target store: set BACKUP_STORE or give "target"');
  if (target === payload.store) throw new InvalidArgumentError(`store "${payload.store}" cannot be backed up into itself`);
  return target;
}

export const backupJob = defineJob({
  name: 'backup',
  queue: 'maintenance',
  schema: backupPayload,
  async handle(payload, ctx) {
    const { settings } = maintenanceOf(ctx);
    const store = payload.store;
    const targetName = backupTarget(payload, settings.backupStore);
    const source = storeOf(ctx, store);
    const target = storeOf(ctx, targetName);
    const run = {
      store,
      targetName,
      source,
      target,
      versions: payload.versions ?? false,
      verifyAll: payload.verify === 'all',
      skipBackupKeys: store === settings.backupStore,
    };
    const result = await withStoreLock(ctx, store, 'backup', (heldBefore) => runBackup(ctx, run, heldBefore));
    return { result, event: { type: 'backup.completed', store, data: result } };
  },
});

/**
 * One backup run. A run resumed with the lock it kept goes on under its manifest id; a retry after a failure or a
 * crash (the lock was released or lapsed, so another backup may have run since) starts a manifest of its own: under
 * the old id, older than the other run's, it would be pruned first and shadowed by the other as the newest.
 */
async function runBackup(ctx: JobContext, run: Run, heldBefore: boolean): Promise<BackupResult> {
  const saved = savedRun.safeParse(ctx.job.progress);
  const resumed = saved.success && heldBefore ? saved.data : undefined;
  const manifests = await listManifests(run.target, run.store);
  // A retry of a run that failed in its prune, its manifest written: while that manifest is still the newest no other
  // backup ran since, and the retry only prunes, rather than write a second one of the same content (each retry
  // another, pushing older points in time out of BACKUP_KEEP).
  const written = savedWritten.safeParse(ctx.job.progress);
  if (written.success && manifests[0] === written.data.written.manifest) {
    return finishWithPrune(ctx, run, written.data.written, await readManifest(run.target, written.data.written.manifest));
  }
  // Retention keeps the newest manifests by id: one made under a clock ahead of this process's must not sort after
  // the new one, which would then be pruned as the oldest (and the stale one kept as the newest).
  const newest = manifests[0] === undefined ? undefined : parseManifestKey(manifests[0])?.id;
  if (resumed === undefined && newest !== undefined) mintAfter(newest);
  const manifestId = resumed?.manifestId ?? newVersionId();
  const at = resumed?.at ?? new Date().toISOString();
  const counts = { objects: 0, versions: 0, copied: 0, skipped: 0, bytes: 0, backupKeysLeftOut: 0 };
  const report = async (phase: string, extra: Record<string, unknown> = {}) => {
    await ctx.reportProgress?.({ phase, manifestId, at, ...counts, ...extra });
  };
  await report('copy');

  const failures = new Failures();
  // What the newest earlier manifest vouches for (its verified blobs), and its version entries to reuse. A damaged
  // one vouches for nothing: every blob is looked for and read back, as in a first run.
  const known = new Set<string>();
  const knownVersions = new Map<string, ManifestVersion>();
  const previousKey = manifests.find((key) => !key.endsWith(`/${manifestId}.json`));
  const previous = previousKey === undefined ? undefined : await readKeptManifest(run.target, previousKey, failures, 'read as none, every blob checked again');
  if (previous !== undefined) {
    const unverified = new Set(previous.unverified);
    for (const etag of manifestEtags(previous)) if (!unverified.has(etag)) known.add(etag);
    for (const version of previous.versions ?? []) knownVersions.set(`${version.key}\n${version.versionId}`, version);
  }

  const toVerify = new Map<string, string>(); // etag -> a key it backs, for the report
  const placing = new Map<string, Promise<string | undefined>>(); // listed etag -> etag of the blob its copy placed

  /** Puts the content of `key` into a blob unless one with this etag is there; returns what it read, if it copied. */
  const placeBlob = async (key: string, etag: string, versionId: string | undefined): Promise<ObjectInfo | undefined> => {
    const present = await statIfPresent(run.target, blobKey(run.store, etag));
    if (present?.etag === etag) {
      counts.skipped++;
      toVerify.set(etag, key); // left by an interrupted run: nobody has checked it yet
      return undefined;
    }
    const blobOf = (info: ObjectInfo) => ({ key: blobKey(run.store, fromPrimary(run, info).etag), options: { contentType: 'application/octet-stream' } });
    const { source, written } = await copyObject(run.source, key, run.target, blobOf, versionId);
    toVerify.set(source.etag, key);
    counts.copied++;
    counts.bytes += written.size;
    return source;
  };

  /** Makes sure the blob for `etag` is in the backup store, once per content; returns what was read if it copied. */
  const ensureBlob = async (key: string, etag: string, versionId?: string): Promise<ObjectInfo | undefined> => {
    if (known.has(etag)) {
      counts.skipped++;
      return undefined;
    }
    const pending = placing.get(etag);
    if (pending === undefined) {
      const placed = placeBlob(key, etag, versionId);
      placing.set(etag, placed.then((read) => read?.etag ?? etag, () => undefined));
      return placed;
    }
    // The same content under another key: its blob is being placed (the object may have changed meanwhile).
    if ((await pending) === etag) {
      counts.skipped++;
      return undefined;
    }
    return placeBlob(key, etag, versionId);
  };

  const backUpVersions = async (key: string): Promise<ManifestVersion[]> => {
    const entries: ManifestVersion[] = [];
    for (const version of (await allVersions(run.source, key)).reverse()) {
      throwIfInterrupted(ctx);
      let info: Pick<ObjectInfo, 'contentType' | 'metadata'>;
      try {
        const read = await ensureBlob(key, version.etag, version.versionId);
        const recorded = knownVersions.get(`${key}\n${version.versionId}`);
        if (recorded !== undefined && recorded.etag === version.etag) {
          entries.push(recorded);
          continue;
        }
        info = read ?? fromPrimary(run, await run.source.stat(key, { versionId: version.versionId }));
      } catch (error) {
        // Removed by retention since it was listed: the key's other versions are still backed up.
        if (error instanceof NotFoundError) continue;
        // A damaged version is its own failure, named as such; the key's other versions are still backed up.
        const failure = contentFailure(error, version);
        if (failure === undefined) throw error;
        failures.add({ ...failure, versionId: version.versionId });
        continue;
      }
      entries.push({
        key,
        versionId: version.versionId,
        etag: version.etag,
        size: version.size,
        contentType: info.contentType,
        metadata: info.metadata,
        createdAt: version.createdAt,
        ...(version.message !== undefined ? { message: version.message } : {}),
        ...(version.author !== undefined ? { author: version.author } : {}),
      });
    }
    return entries;
  };

  /** The entry of a listed object, its blob in place; undefined when it is gone since it was listed or is damaged (reported). */
  const backUpObject = async (item: ObjectInfo): Promise<ManifestObject | undefined> => {
    try {
      const { key, etag, size, contentType, metadata, updatedAt } = (await ensureBlob(item.key, item.etag)) ?? item;
      return { key, etag, size, contentType, metadata, updatedAt };
    } catch (error) {
      if (error instanceof NotFoundError) return undefined;
      const failure = contentFailure(error, item);
      if (failure === undefined) throw error;
      failures.add(failure);
      return undefined;
    }
  };

  const objects: ManifestObject[] = [];
  const versions: ManifestVersion[] = [];
  for await (const page of pages(run.source)) {
    throwIfInterrupted(ctx);
    const listed = page.items.map((item) => fromPrimary(run, item));
    const items = run.skipBackupKeys ? listed.filter((item) => !isBackupKey(item.key)) : listed;
    counts.backupKeysLeftOut += page.items.length - items.length;
    const pageObjects: (ManifestObject | undefined)[] = new Array(items.length);
    const pageVersions: ManifestVersion[][] = items.map(() => []);
    await forEachLimited(
      items.map((item, i) => ({ item, i })),
      COPY_WIDTH,
      async ({ item, i }) => {
        throwIfInterrupted(ctx);
        pageObjects[i] = await backUpObject(item);
        // Whatever became of the current object: a damaged one must not cost the key its intact history.
        if (run.versions) pageVersions[i] = await backUpVersions(item.key);
      },
    );
    for (const entry of pageObjects) if (entry !== undefined) objects.push(entry);
    for (const list of pageVersions) versions.push(...list);
    counts.objects = objects.length;
    counts.versions = versions.length;
    await report('copy');
  }

  const manifest: Manifest = { id: manifestId, at, store: run.store, objects, ...(run.versions ? { versions } : {}), unverified: [] };
  if (run.verifyAll) for (const entry of [...objects, ...versions]) if (!toVerify.has(entry.etag)) toVerify.set(entry.etag, entry.key);
  await report('verify', { checking: toVerify.size });
  await forEachLimited([...toVerify], COPY_WIDTH, async ([etag, key]) => {
    throwIfInterrupted(ctx);
    const failure = await verifyStored(run.target, blobKey(run.store, etag), etag);
    if (failure === undefined) return;
    failures.add({ key, etag, reason: `backup blob ${failure.reason}` });
    manifest.unverified.push(etag);
  });

  // A run that lost its job (its worker froze past the job's lock, and another run of the job took it over) stops
  // before its commits: its manifest would shadow the other run's, and its pruning delete blobs the other still copies.
  await passFence(ctx);
  const manifestKey = await writeManifest(run.target, manifest, ctx.fence);
  // Only now that a manifest names them unverified: removed before, by a run that then failed to write one, a blob
  // the previous manifest vouches for would be skipped by every later backup, and missing at restore.
  await removeFailedBlobs(ctx, run, manifest.unverified);
  const result: WrittenResult = {
    store: run.store,
    target: run.targetName,
    manifest: manifestKey,
    manifestId,
    objects: objects.length,
    versions: versions.length,
    copied: counts.copied,
    skipped: counts.skipped,
    bytes: counts.bytes,
    checked: toVerify.size,
    failureCount: failures.count,
    failures: failures.items,
    backupKeysLeftOut: counts.backupKeysLeftOut,
  };
  await report('prune', { written: result });
  return finishWithPrune(ctx, run, result, manifest);
}

/** Prunes after `manifest` was written, and answers with what the run that wrote it did. */
async function finishWithPrune(ctx: JobContext, run: Run, written: WrittenResult, manifest: Manifest): Promise<BackupResult> {
  const failures = Failures.resumed(written.failureCount, written.failures);
  await passFence(ctx);
  const pruned = await prune(run.target, run.store, manifest, maintenanceOf(ctx).settings.backupKeep, failures, ctx.fence);
  return { ...written, ...failures.report(), ...pruned };
}

/**
 * Deletes the blobs that failed their check, so that the next backup copies them again. One that cannot be deleted
 * now is not trusted either: the manifest names it unverified, so the next backup reads it back again.
 */
async function removeFailedBlobs(ctx: JobContext, run: Run, etags: readonly string[]): Promise<void> {
  await forEachLimited(etags, COPY_WIDTH, async (etag) => {
    await run.target.delete(blobKey(run.store, etag), { fence: ctx.fence, allVersions: true }).catch((error: unknown) => ctx.log.warn({ err: error, etag }, 'could not remove a backup blob that failed its check'));
  });
}

/**
 * A kept manifest, or undefined (reported, with `consequence`) when it cannot be read as one: damaged at rest, so
 * that a store that checks what it serves refuses it, or no longer parsing. Its error must not fail the run: not
 * retried, it would stop every later backup of the store while the manifest is kept.
 */
async function readKeptManifest(target: StorageProvider, key: string, failures: Failures, consequence: string): Promise<Manifest | undefined> {
  try {
    return await readManifest(target, key);
  } catch (error) {
    if (!(error instanceof DataCorruptedError || error instanceof InvalidArgumentError)) throw error;
    failures.add({ key, reason: `backup manifest unreadable (${error.message}): ${consequence}` });
    return undefined;
  }
}

/** Deletes manifests past the newest `keep` (the new one among them), then blobs that no kept manifest needs. */
async function prune(
  target: StorageProvider,
  store: string,
  current: Manifest,
  keep: number,
  failures: Failures,
  fence?: () => Promise<void>,
): Promise<{ manifestsRemoved: number; blobsRemoved: number }> {
  const manifests = await listManifests(target, store);
  const kept = manifests.slice(0, keep);
  const removed = manifests.slice(keep);
  if (removed.length === 0) return { manifestsRemoved: 0, blobsRemoved: 0 };
  const needed = manifestEtags(current);
  let unreadable = false;
  for (const key of kept) {
    if (key.endsWith(`/${current.id}.json`)) continue;
    const manifest = await readKeptManifest(target, key, failures, 'no blob is pruned while it is kept');
    if (manifest === undefined) unreadable = true;
    else for (const etag of manifestEtags(manifest)) needed.add(etag);
  }
  for (const key of removed) await target.delete(key, { fence, allVersions: true });
  // What an unreadable manifest needs is unknown: every blob stays until retention has removed it too.
  if (unreadable) return { manifestsRemoved: removed.length, blobsRemoved: 0 };
  let blobsRemoved = 0;
  const prefix = blobPrefix(store);
  for await (const page of pages(target, { prefix, limit: 1000 })) {
    const unneeded = page.items.filter((item) => !needed.has(item.key.slice(prefix.length)));
    await forEachLimited(unneeded, COPY_WIDTH, async (item) => {
      await target.delete(item.key, { fence, allVersions: true });
      blobsRemoved++;
    });
  }
  return { manifestsRemoved: removed.length, blobsRemoved };
}
