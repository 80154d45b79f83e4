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
 * keeps it, reported as a failure.
 */
import { z } from 'zod';
import { InvalidArgumentError, NotFoundError } from '../providers/errors.js';
import {
  COPY_WIDTH,
  ContentMismatch,
  Failures,
  PAGE_SIZE,
  forEachLimited,
  historyOfItsOwn,
  missingVersions,
  storeExpected,
  verifiedBody,
  type VerificationReport,
} from './copy.js';
import { allVersions, sameObject, statIfPresent, versionMessage } from '../providers/object-info.js';
import { defineJob, maintenanceOf, storeNameSchema, storeOf, throwIfInterrupted } from './definition.js';
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
  })
  .passthrough();

/** The store holding the backup to restore; refuses none, or the store restored into (the API checks it too). */
export function backupSource(payload: { store: string; from?: string }, backupStore: string | undefined): string {
  const from = payload.from ?? backupStore;
  if (from === undefined) throw new InvalidArgumentError('restore-backup needs the backup store: set BACKUP_STORE or give "from"');
  if (from === payload.store) throw new InvalidArgumentError(`store "${payload.store}" cannot be restored from its own backups`);
  return from;
}

export const restoreBackupJob = defineJob({
  name: 'restore-backup',
  queue: 'maintenance',
  schema: restoreBackupPayload,
  async handle(payload, ctx) {
    const fromName = backupSource(payload, maintenanceOf(ctx).settings.backupStore);
    const backup = storeOf(ctx, fromName);
    const target = storeOf(ctx, payload.store);
    const manifest = await readManifest(backup, payload.manifest);

    const resumed = savedRun.safeParse(ctx.job.progress);
    const counts = resumed.success ? resumed.data : { done: 0, restored: 0, skipped: 0, versions: 0, bytes: 0, failureCount: 0 };
    const failures = new Failures();
    failures.count = counts.failureCount;
    const versionsByKey = new Map<string, ManifestVersion[]>();
    for (const version of manifest.versions ?? []) versionsByKey.set(version.key, [...(versionsByKey.get(version.key) ?? []), version]);
    const blob = (etag: string) => blobKey(manifest.store, etag);

    const restoreVersions = async (key: string, versions: readonly ManifestVersion[]): Promise<void> => {
      const missing = missingVersions(versions, (await allVersions(target, key)).reverse(), ctx.job.timestamp);
      if (missing === undefined) {
        failures.add(historyOfItsOwn(key));
        return;
      }
      for (const version of missing) {
        throwIfInterrupted(ctx);
        const body = await verifiedBody(backup, blob(version.etag), version.etag, version.size);
        const { contentType, metadata, author } = version;
        await storeExpected(key, version.etag, (expectedEtag) =>
          target.createVersion(key, body, { message: versionMessage(version), author, contentType, metadata, expectedEtag }),
        );
        counts.versions++;
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
        target.write(entry.key, body, { contentType: entry.contentType, metadata: entry.metadata, expectedEtag }),
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
          if (error instanceof ContentMismatch) failures.add({ key: entry.key, etag: entry.etag, reason: `backup blob damaged: ${error.message}` });
          else if (error instanceof NotFoundError) failures.add({ key: entry.key, etag: entry.etag, reason: 'backup blob missing' });
          else throw error;
        }
      });
      counts.done = Math.min(start + PAGE_SIZE, manifest.objects.length);
      counts.failureCount = failures.count;
      await ctx.reportProgress?.({ phase: 'restore', total: manifest.objects.length, ...counts });
    }

    const result: RestoreBackupResult = {
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
    return { result, event: { type: 'backup.restored', store: payload.store, data: result } };
  },
});

