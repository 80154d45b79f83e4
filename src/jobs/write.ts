/**
 * `write`: replaces an object's content and metadata; event `object.written` with the new ObjectInfo.
 *
 * Idempotent: writing the same body twice leaves the same object. Two retry cases need a look at the target:
 * the staged body is gone (an earlier run wrote it and released it), and `ifMatch` or `ifNoneMatch` fails because
 * an earlier run already replaced (or created) the object. In both, the target holding this job's etag means the
 * write happened.
 */
import { z } from 'zod';
import { PreconditionFailedError } from '../providers/errors.js';
import { describeWrite } from '../providers/metadata.js';
import type { ObjectInfo, StorageProvider, WriteOptions } from '../providers/types.js';
import { sameObject, statIfPresent } from '../providers/object-info.js';
import { defineJob, isRetry, newKeySchema, storeNameSchema, storeOf, writeOptionsShape } from './definition.js';
import { applyBody, bodyRefSchema } from './staging.js';

export const writePayload = z
  .object({ store: storeNameSchema, key: newKeySchema, body: bodyRefSchema, ...writeOptionsShape })
  .strict();
export type WritePayload = z.output<typeof writePayload>;

/**
 * The current object when it is what this job writes: its content, type and metadata. Another job's write of the
 * same bytes with other metadata is not taken for this one's (a create-only retry would claim a creation it lost);
 * an identical object is, as nothing could tell the two apart.
 */
export async function currentWith(provider: StorageProvider, key: string, etag: string, opts: WriteOptions): Promise<ObjectInfo | undefined> {
  const info = await statIfPresent(provider, key);
  return info !== undefined && sameObject(info, { etag, ...describeWrite(opts) }) ? info : undefined;
}

export const writeJob = defineJob({
  name: 'write',
  queue: 'objects',
  schema: writePayload,
  async handle(payload, ctx) {
    const { store, key, body, contentType, metadata, ifMatch, ifNoneMatch } = payload;
    const provider = storeOf(ctx, store);
    const written = () => currentWith(provider, key, body.etag, { contentType, metadata });
    const info = await applyBody(
      ctx,
      body,
      async (content) => {
        try {
          return await provider.write(key, content, { contentType, metadata, ifMatch, ifNoneMatch, expectedEtag: body.etag, fence: ctx.fence });
        } catch (error) {
          if (error instanceof PreconditionFailedError && isRetry(ctx)) {
            const done = await written();
            if (done !== undefined) return done;
          }
          throw error;
        }
      },
      written,
    );
    return { result: info, event: { type: 'object.written', store, key, data: info } };
  },
});
