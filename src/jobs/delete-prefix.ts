/**
 * `delete-prefix`: deletes every object whose key starts with `prefix` (their versions too with `allVersions`);
 * event `objects.deleted` once, with the count. The store is listed a page at a time and each page's keys deleted
 * (as `delete` deletes one, fenced); the job saves its place after each page, stops between pages when its worker
 * shuts down, and a later run (a retry, a resumed one) goes on from that place. Keys are listed as they are when the
 * job reaches them: an object written under the prefix while the job runs is deleted when its key comes after the
 * job's place, kept when it comes before.
 */
import { z } from 'zod';
import { validatePrefix } from '../providers/keys.js';
import { keysPage } from '../providers/list-keys.js';
import { mapLimit } from '../providers/map-limit.js';
import { defineJob, storeNameSchema, storeOf, throwIfInterrupted } from './definition.js';

export const deletePrefixPayload = z
  .object({
    store: storeNameSchema,
    prefix: z
      .string()
      .min(1, 'prefix must not be empty: a prefix delete never deletes a whole store')
      .max(1024)
      .superRefine((prefix, ctx) => {
        try {
          validatePrefix(prefix);
        } catch (error) {
          ctx.addIssue({ code: 'custom', message: (error as Error).message });
        }
      }),
    allVersions: z.boolean().optional(),
  })
  .strict();
export type DeletePrefixPayload = z.output<typeof deletePrefixPayload>;

export interface DeletePrefixResult {
  prefix: string;
  /** Keys this job listed and deleted, over all its runs; those a crash cut short in mid-page are not counted (the run after no longer finds them). */
  deleted: number;
  allVersions: boolean;
}

/** Keys listed at a time; the job's place is saved after each page. */
const PAGE = 200;
/** Deletes of one page in flight at once. */
const WIDTH = 8;

/** Where an earlier run stopped: after `cursor` (from the start without one), `deleted` keys deleted by then. */
const savedPlace = z.object({ cursor: z.string().optional(), deleted: z.number().int().nonnegative() });

export const deletePrefixJob = defineJob({
  name: 'delete-prefix',
  queue: 'objects',
  schema: deletePrefixPayload,
  async handle({ store, prefix, allVersions = false }, ctx) {
    const provider = storeOf(ctx, store);
    const saved = savedPlace.safeParse(ctx.job.progress);
    let { cursor, deleted } = saved.success ? saved.data : { cursor: undefined, deleted: 0 };
    do {
      throwIfInterrupted(ctx);
      const page = await keysPage(provider, { prefix, cursor, limit: PAGE });
      await mapLimit(page.items, WIDTH, (key) => provider.delete(key, { allVersions, fence: ctx.fence }));
      deleted += page.items.length;
      cursor = page.cursor;
      await ctx.reportProgress?.({ ...(cursor === undefined ? {} : { cursor }), deleted });
    } while (cursor !== undefined);
    const result: DeletePrefixResult = { prefix, deleted, allVersions };
    return { result, event: { type: 'objects.deleted', store, data: result } };
  },
});
