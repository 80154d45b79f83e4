/**
 * `restore`: makes a version's content current and records a new version (message `restore <id>` unless given);
 * event `version.restored` with the new VersionInfo and `restoredFrom`.
 *
 * Idempotent the way `version` is: on a retry, a newest version with the restored content and this job's message,
 * made after the job was enqueued, is this job's.
 */
import { z } from 'zod';
import type { VersionInfo } from '../providers/types.js';
import { authorSchema, defineJob, isRetry, keySchema, storeNameSchema, storeOf } from './definition.js';
import { versionBaseline, versionMadeBy } from './version.js';

export const restorePayload = z
  .object({
    store: storeNameSchema,
    key: keySchema,
    versionId: z.string().min(1).max(256),
    message: z.string().min(1).max(4096).optional(),
    author: authorSchema.optional(),
  })
  .strict();
export type RestorePayload = z.output<typeof restorePayload>;

export type RestoreResult = VersionInfo & { restoredFrom: string };

export const restoreJob = defineJob({
  name: 'restore',
  queue: 'objects',
  schema: restorePayload,
  async handle({ store, key, versionId, message = `restore ${versionId}`, author }, ctx) {
    const provider = storeOf(ctx, store);
    const baseline = await versionBaseline(ctx, provider, key);
    let info: VersionInfo | undefined;
    if (isRetry(ctx)) {
      const { etag } = await provider.stat(key, { versionId });
      info = await versionMadeBy(ctx.job, provider, key, { etag, message, author }, baseline);
    }
    info ??= await provider.restoreVersion(key, versionId, { message, author, fence: ctx.fence });
    const result: RestoreResult = { ...info, restoredFrom: versionId };
    return { result, event: { type: 'version.restored', store, key, data: result } };
  },
});
