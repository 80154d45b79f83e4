/** `delete`: removes an object (its versions too with `allVersions`); event `object.deleted`. Idempotent by contract. */
import { z } from 'zod';
import { defineJob, keySchema, storeNameSchema, storeOf } from './definition.js';

export const deletePayload = z
  .object({ store: storeNameSchema, key: keySchema, allVersions: z.boolean().optional() })
  .strict();
export type DeletePayload = z.output<typeof deletePayload>;

export interface DeleteResult {
  key: string;
  deleted: true;
  allVersions: boolean;
}

export const deleteJob = defineJob({
  name: 'delete',
  queue: 'objects',
  schema: deletePayload,
  async handle({ store, key, allVersions = false }, ctx) {
    await storeOf(ctx, store).delete(key, { allVersions, fence: ctx.fence });
    const result: DeleteResult = { key, deleted: true, allVersions };
    return { result, event: { type: 'object.deleted', store, key, data: result } };
  },
});
