/**
 * `restore`: makes a version's content current and records a new version (message `restore <id>` unless given);
 * event `version.restored` with the new VersionInfo and `restoredFrom`.
 *
 * Idempotent the way `version` is: on a retry, a version with the restored content and this job's message and author,
 * newer than the key's newest when its first run began, is this job's. The restored content's etag is noted before
 * the first run restores: the restore leaves the source version behind the newest, and retention may remove it
 * before a retry.
 */
import { z } from 'zod';
import type { StorageProvider, VersionInfo } from '../providers/types.js';
import { authorSchema, defineJob, isRetry, keySchema, storeNameSchema, storeOf, versionMessageSchema, type JobContext } from './definition.js';
import { versionBaseline, versionMadeBy } from './version.js';

export const restorePayload = z
  .object({
    store: storeNameSchema,
    key: keySchema,
    versionId: z.string().min(1).max(256),
    message: versionMessageSchema.optional(),
    author: authorSchema.optional(),
  })
  .strict();
export type RestorePayload = z.output<typeof restorePayload>;

export type RestoreResult = VersionInfo & { restoredFrom: string };

const SOURCE_ETAG = 'restoreSourceEtag';

/**
 * The etag of the version restored, noted in the job's journal before the first run restores it: a retry that finds
 * the source gone (retention) still knows the content its own version holds. Versions never change, so any run may
 * note it; a retry whose first run noted nothing asks the store, as before.
 */
async function sourceEtag(ctx: JobContext, provider: StorageProvider, key: string, versionId: string): Promise<string> {
  const noted = isRetry(ctx) ? await ctx.journal?.noted(SOURCE_ETAG) : undefined;
  if (noted !== undefined) return noted;
  const { etag } = await provider.stat(key, { versionId });
  await ctx.journal?.noteOnce(SOURCE_ETAG, etag);
  return etag;
}

export const restoreJob = defineJob({
  name: 'restore',
  queue: 'objects',
  schema: restorePayload,
  pins: ({ store, key, versionId }) => ({ store, key, versionId }),
  async handle({ store, key, versionId, message, author }, ctx) {
    const provider = storeOf(ctx, store);
    const [baseline, etag] = await Promise.all([versionBaseline(ctx, provider, key), sourceEtag(ctx, provider, key, versionId)]);
    // No message given: the store records its default, `restore <id>` — or none, on s3 where the restored version's
    // metadata leaves no room for it beside S3's 2 KB (passed as the job's own, it was refused there).
    const messages = message !== undefined ? [message] : [`restore ${versionId}`, undefined];
    let info: VersionInfo | undefined;
    if (isRetry(ctx)) info = await versionMadeBy(ctx.job, provider, key, { etag, messages, author }, baseline);
    info ??= await provider.restoreVersion(key, versionId, { message, author, fence: ctx.fence });
    const result: RestoreResult = { ...info, restoredFrom: versionId };
    return { result, event: { type: 'version.restored', store, key, data: result } };
  },
});
