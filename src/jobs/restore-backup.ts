/**
 * `restore-backup`: writes every object of a backup manifest into a store; event `backup.restored`.
 *
 * Every blob is checked against the manifest's etag before it is written (`verifiedBody`), and every write's etag
 * against it again, so a damaged backup is reported, never restored. Additive: keys of the store that the manifest
 * does not name are left alone; a key that already holds the manifest's content, type and metadata is skipped,
 * which also makes a retried or resumed run cheap (progress = how many manifest entries are done).
 *
 * Versions (from a backup made with `versions: true`) are recorded again, oldest first, with their messages and
 * authors (ids and times are the store's new ones) into a key that has no versions yet, or after the newest version
 * its history shares with the manifest's (an interrupted run, an earlier restore); a key with a history of its own
 * keeps it, reported as a failure. A version whose blob is damaged or missing is a failure of that version alone:
 * the key's other versions are recorded in their order, and its current object is restored.
 *
 * A restore holds the backed-up store's backup lock (`withStoreLock`): a backup of that store meanwhile would prune
 * the manifest and blobs the restore reads. The one of them that finds the lock taken is retried later.
 */
import { z } from 'zod';
import { InvalidArgumentError, NotFoundError } from '../providers/errors.js';
import { withStoreLock } from './store-lock.js';
import {
  COPY_WIDTH,
  ContentMismatch,
  Failures,
  PAGE_SIZE,
  failureSchema,
  forEachLimited,
  historyOfItsOwn,
  missingVersions,
  refusedByTarget,
  storeExpected,
  verifiedBody,
  type Failure,
  type VerificationReport,
} from './copy.js';
import { allVersions, sameObject, statIfPresent, versionMessage } from '../providers/object-info.js';
import { defineJob, maintenanceOf, progressInto, storeNameSchema, storeOf, throwIfInterrupted, type JobContext } from './definition.js';
import { blobKey, parseManifestKey, readManifest, type ManifestObject, type ManifestVersion } from './manifest.js';

export const restoreBackupPayload = z
  .object({
    /** The manifest's key, as a backup's result names it: `backups/<store>/manifests/<id>.json`. */
    manifest: z.string().refine((key) => parseManifestKey(key) !== undefined, 'not a manifest key (backups/<store>/manifests/<id>.json)'),
    /** The store to restore into. */
    store: storeNameSchema,
    /** The store holding the backup; `BACKUP_STORE` when left out. */
    from: storeNameSchema.optional(),
  })
  .strict();

export interface RestoreBackupResult extends VerificationReport {
  manifest: string;
  store: string;
  from: string;
  objects: number;
  restored: number;
  skipped: number;
  versions: number;
  bytes: number;
}

const savedRun = z
  .object({
    done: z.number().int().nonnegative(),
    restored: z.number(),
    skipped: z.number(),
    versions: z.number(),
    bytes: z.number(),
    // A resumed run reports the earlier runs' failures too: its own alone could call a partial restore verified.
    failureCount: z.number().default(0),
    failures: z.array(failureSchema).default([]),
  })
  .passthrough();

/** The store holding the backup to restore; refuses none, or the store restored into (the API checks it too). */
export function backupSource(payload: { store: string; from?: string }, backupStore: string | undefined): string {
  const from = payload.from ?? backupStore;
  if (from === undefined) throw new InvalidArgumentError('restore-backup needs the backup store: set BACKUP_STORE or give "from"');
  if (from === payload.store) throw new InvalidArgumentError(`store "${payload.store}" cannot be restored from its own backups`);
  return from;
}

/** The failure of a manifest entry (object or version) whose blob cannot be restored; undefined for any other error. */
function blobFailure(error: unknown, entry: { key: string; etag: string }): Failure | undefined {
  if (error instanceof ContentMismatch) return { key: entry.key, etag: entry.etag, reason: `backup blob damaged: ${error.message}` };
  if (error instanceof NotFoundError) return { key: entry.key, etag: entry.etag, reason: 'backup blob missing' };
  return refusedByTarget(error, { key: entry.key, etag: entry.etag });
}

const versionsWithoutObject = (key: string): Failure => ({ key, reason: 'its versions are in the backup but not its object: not restored' });

type RestoreBackupPayload = z.output<typeof restoreBackupPayload>;

export const restoreBackupJob = defineJob({
  name: 'restore-backup',
  queue: 'maintenance',
  schema: restoreBackupPayload,
  async handle(payload, ctx) {
    const fromName = backupSource(payload, maintenanceOf(ctx).settings.backupStore);
    const backedUp = parseManifestKey(payload.manifest)!.store; // the schema admits manifest keys only
    const result = await withStoreLock(ctx, backedUp, 'restore', () => restoreBackup(ctx, payload, fromName));
    return { result, event: { type: 'backup.restored', store: payload.store, data: result } };
  },
});

async function restoreBackup(ctx: JobContext, payload: RestoreBackupPayload, fromName: string): Promise<RestoreBackupResult> {
  const backup = storeOf(ctx, fromName);
  const target = storeOf(ctx, payload.store);
  const manifest = await readManifest(backup, payload.manifest);

  const resumed = savedRun.safeParse(progressInto(target, ctx));
  const counts = resumed.success ? resumed.data : { done: 0, restored: 0, skipped: 0, versions: 0, bytes: 0, failureCount: 0, failures: [] };
  const failures = Failures.resumed(counts.failureCount, counts.failures);
  const versionsByKey = new Map<string, ManifestVersion[]>();
  for (const version of manifest.versions ?? []) versionsByKey.set(version.key, [...(versionsByKey.get(version.key) ?? []), version]);
  const blob = (etag: string) => blobKey(manifest.store, etag);

  /**
   * Records the versions the key lacks. One whose blob fails is left out, not the rest after it: they are intact, and
   * a later restore places nothing before them (it continues after the newest shared version), so stopping there
   * would lose them for good while skipping loses only what is lost already (as a backup leaves a damaged one out).
   */
  const restoreVersions = async (key: string, versions: readonly ManifestVersion[]): Promise<void> => {
    const missing = missingVersions(versions, (await allVersions(target, key)).reverse(), ctx.job.timestamp);
    if (missing === undefined) {
      failures.add(historyOfItsOwn(key));
      return;
    }
    for (const version of missing) {
      throwIfInterrupted(ctx);
      try {
        const body = await verifiedBody(backup, blob(version.etag), version.etag, version.size);
        const { contentType, metadata, author } = version;
        await storeExpected(key, version.etag, (expectedEtag) =>
          target.createVersion(key, body, { message: versionMessage(version), author, contentType, metadata, expectedEtag, fence: ctx.fence }),
        );
        counts.versions++;
      } catch (error) {
        const failure = blobFailure(error, version);
        if (failure === undefined) throw error;
        failures.add({ ...failure, versionId: version.versionId });
      }
    }
  };

  const restoreObject = async (entry: ManifestObject): Promise<void> => {
    const versions = versionsByKey.get(entry.key);
    if (versions !== undefined) await restoreVersions(entry.key, versions);
    const current = await statIfPresent(target, entry.key);
    if (current !== undefined && sameObject(current, entry)) {
      counts.skipped++;
      return;
    }
    const body = await verifiedBody(backup, blob(entry.etag), entry.etag, entry.size);
    const written = await storeExpected(entry.key, entry.etag, (expectedEtag) =>
      target.write(entry.key, body, { contentType: entry.contentType, metadata: entry.metadata, expectedEtag, fence: ctx.fence }),
    );
    counts.restored++;
    counts.bytes += written.size;
  };

  for (let start = counts.done; start < manifest.objects.length; start += PAGE_SIZE) {
    throwIfInterrupted(ctx);
    await forEachLimited(manifest.objects.slice(start, start + PAGE_SIZE), COPY_WIDTH, async (entry) => {
      throwIfInterrupted(ctx);
      try {
        await restoreObject(entry);
      } catch (error) {
        const failure = blobFailure(error, entry);
        if (failure === undefined) throw error;
        failures.add(failure);
      }
    });
    counts.done = Math.min(start + PAGE_SIZE, manifest.objects.length);
    counts.failureCount = failures.count;
    counts.failures = failures.items;
    await ctx.reportProgress?.({ phase: 'restore', total: manifest.objects.length, ...counts });
  }

  // Versions of a key the backup holds no object of (damaged, or deleted while it ran): recording them would make the
  // newest one current, perhaps over the target's own object. Reported, not restored: the blobs are in the backup.
  const objectKeys = new Set(manifest.objects.map((entry) => entry.key));
  for (const key of versionsByKey.keys()) if (!objectKeys.has(key)) failures.add(versionsWithoutObject(key));

  return {
    manifest: payload.manifest,
    store: payload.store,
    from: fromName,
    objects: manifest.objects.length,
    restored: counts.restored,
    skipped: counts.skipped,
    versions: counts.versions,
    bytes: counts.bytes,
    ...failures.report(),
  };
}
