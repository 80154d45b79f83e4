/**
 * `copy`: writes the content of one object (of any store, at its current version or an older one) to another key;
 * event `object.written` with the new ObjectInfo, as a write's. The content streams from store to store through the
 * worker, checked against the source's etag on the way.
 *
 * The request pins what is copied: the API records the source's etag, Content-Type and metadata when it accepts the
 * copy (a Content-Type or `X-Meta-*` of the request replaces the source's), so the job copies what the client saw. A
 * source replaced or deleted before the job ran fails the job with a precondition failure, rather than copying
 * something else. Idempotent as `write` is: a retry that finds the target holding this copy (its etag and
 * description) takes the work as done, also when the source is gone by then.
 */
import { z } from 'zod';
import { NotFoundError, PreconditionFailedError } from '../providers/errors.js';
import type { ObjectInfo } from '../providers/types.js';
import { defineJob, isRetry, keySchema, newKeySchema, storeNameSchema, storeOf, writeOptionsShape } from './definition.js';
import { etagSchema } from './staging.js';
import { currentWith } from './write.js';

export const copyPayload = z
  .object({
    store: storeNameSchema,
    key: newKeySchema,
    source: z.object({ store: storeNameSchema, key: keySchema, versionId: z.string().min(1).max(256).optional(), etag: etagSchema }).strict(),
    ...writeOptionsShape,
  })
  .strict();
export type CopyPayload = z.output<typeof copyPayload>;

export const copyJob = defineJob({
  name: 'copy',
  queue: 'objects',
  schema: copyPayload,
  pins: ({ source }) => (source.versionId === undefined ? undefined : { store: source.store, key: source.key, versionId: source.versionId }),
  async handle(payload, ctx) {
    const { store, key, source, contentType, metadata, ifMatch, ifNoneMatch } = payload;
    const target = storeOf(ctx, store);
    const from = storeOf(ctx, source.store);
    const outcome = (info: ObjectInfo) => ({ result: info, event: { type: 'object.written' as const, store, key, data: info } });
    /** On a retry: the target already holding this copy means an earlier run made it. */
    const copiedBefore = async (error: unknown): Promise<ObjectInfo> => {
      const done = isRetry(ctx) ? await currentWith(target, key, source.etag, { contentType, metadata }) : undefined;
      if (done === undefined) throw error;
      return done;
    };
    const what = `"${source.key}" in store "${source.store}"${source.versionId === undefined ? '' : ` at version ${source.versionId}`}`;

    let read;
    try {
      read = await from.read(source.key, { versionId: source.versionId });
    } catch (error) {
      if (!(error instanceof NotFoundError)) throw error;
      return outcome(await copiedBefore(new PreconditionFailedError(`copy source ${what} is gone since the copy was asked for`)));
    }
    if (read.info.etag !== source.etag) {
      read.body.destroy();
      return outcome(await copiedBefore(new PreconditionFailedError(`copy source ${what} changed since the copy was asked for (its etag is ${read.info.etag})`)));
    }
    try {
      return outcome(await target.write(key, read.body, { contentType, metadata, ifMatch, ifNoneMatch, expectedEtag: source.etag, fence: ctx.fence }));
    } catch (error) {
      read.body.destroy();
      if (error instanceof PreconditionFailedError) return outcome(await copiedBefore(error));
      throw error;
    }
  },
});
