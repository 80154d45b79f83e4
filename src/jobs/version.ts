/**
 * `version`: makes the body the current content and records an immutable version with message and author;
 * event `version.created` with the VersionInfo.
 *
 * Idempotent: versions carry no job id (and user metadata is the user's), so a version made by an earlier run
 * of this job is recognised by content: the newest version has this job's etag, message and author and was
 * created after the job was enqueued. The check runs only on a retry (and when the staged body is gone), so a
 * first run never merges two deliberate identical versions. The slack absorbs providers that keep whole seconds
 * (git) and clock skew between producer and worker.
 */
import { z } from 'zod';
import { NotFoundError } from '../providers/errors.js';
import type { Author, StorageProvider, VersionInfo } from '../providers/types.js';
import { authorSchema, defineJob, isRetry, keySchema, storeNameSchema, storeOf, writeOptionsShape, type JobRef } from './definition.js';
import { applyBody, bodyRefSchema } from './staging.js';

export const SAME_JOB_SLACK_MS = 2_000;

export const versionPayload = z
  .object({
    store: storeNameSchema,
    key: keySchema,
    body: bodyRefSchema,
    message: z.string().min(1).max(4096),
    author: authorSchema.optional(),
    ...writeOptionsShape,
  })
  .strict();
export type VersionPayload = z.output<typeof versionPayload>;

function sameAuthor(a: Author | undefined, b: Author | undefined): boolean {
  if (a === undefined || b === undefined) return a === b || b === undefined;
  return a.name === b.name && (b.email === undefined || a.email === b.email);
}

/** The newest version of `key` if this job made it (see the comment at the top). */
export async function versionMadeBy(
  job: JobRef,
  provider: StorageProvider,
  key: string,
  expected: { etag: string; message: string; author?: Author },
): Promise<VersionInfo | undefined> {
  let newest: VersionInfo | undefined;
  try {
    newest = (await provider.listVersions(key, { limit: 1 })).items[0];
  } catch (error) {
    if (error instanceof NotFoundError) return undefined;
    throw error;
  }
  if (newest === undefined) return undefined;
  const recent = Date.parse(newest.createdAt) >= job.timestamp - SAME_JOB_SLACK_MS;
  const same = newest.etag === expected.etag && newest.message === expected.message && sameAuthor(newest.author, expected.author);
  return recent && same ? newest : undefined;
}

export const versionJob = defineJob({
  name: 'version',
  queue: 'objects',
  schema: versionPayload,
  async handle(payload, ctx) {
    const { store, key, body, message, author, contentType, metadata, ifMatch } = payload;
    const provider = storeOf(ctx, store);
    const made = () => versionMadeBy(ctx.job, provider, key, { etag: body.etag, message, author });
    let info = isRetry(ctx) ? await made() : undefined;
    if (info !== undefined) {
      await ctx.staging.release(body);
    } else {
      info = await applyBody(ctx.staging, body, (content) => provider.createVersion(key, content, { message, author, contentType, metadata, ifMatch }), made, ctx.journal);
    }
    return { result: info, event: { type: 'version.created', store, key, data: info } };
  },
});
