/**
 * `version`: makes the body the current content and records an immutable version with message and author;
 * event `version.created` with the VersionInfo.
 *
 * Idempotent: versions carry no job id (and user metadata is the user's), so a version made by an earlier run
 * of this job is recognised by content: a version with this job's etag, message and author newer than the key's
 * newest version when the job's first run began (`versionBaseline`), and created after the job was enqueued. Every
 * such version counts, not only the newest: a job picked up again after its worker died runs tens of seconds later
 * (the lock duration), when other jobs may have added versions to the key. The check runs only on a retry (and when
 * the staged body is gone), so a first run never merges two deliberate identical versions; on a retry, another job's
 * identical version (same content, message and author, made meanwhile) is taken for this one's. The enqueue time's
 * slack absorbs providers that keep whole seconds (git) and clock skew between producer and worker.
 */
import { z } from 'zod';
import { NotFoundError } from '../providers/errors.js';
import type { Author, StorageProvider, VersionInfo } from '../providers/types.js';
import { authorSchema, defineJob, isRetry, newKeySchema, storeNameSchema, storeOf, versionMessageSchema, writeOptionsShape, type JobContext, type JobRef } from './definition.js';
import { applyBody, bodyRefSchema } from './staging.js';

export const SAME_JOB_SLACK_MS = 2_000;

export const versionPayload = z
  .object({
    store: storeNameSchema,
    key: newKeySchema,
    body: bodyRefSchema,
    message: versionMessageSchema,
    author: authorSchema.optional(),
    ...writeOptionsShape,
  })
  .strict();
export type VersionPayload = z.output<typeof versionPayload>;

/** `recorded` is the author a provider records for `expected` (its default author when there is none). */
function sameAuthor(recorded: Author | undefined, expected: Author | undefined): boolean {
  if (recorded === undefined || expected === undefined) return recorded === expected;
  return recorded.name === expected.name && (recorded.email ?? '') === (expected.email ?? '');
}

/** Versions looked at, newest first, before a retry gives up recognising its own (a key written very often). */
const MAX_VERSIONS_SCANNED = 5_000;
const SCAN_PAGE = 200;

const BASELINE = 'versionBaseline';

/**
 * The key's newest version as this job's first run found it before making one ('' for none), noted in the job's
 * journal: a retry's search for its own version stops there, whatever the clocks say — an identical version made by
 * another job just before this one was enqueued (within the slack) is not taken for this one's.
 */
export async function versionBaseline(ctx: Pick<JobContext, 'journal' | 'job'>, provider: StorageProvider, key: string): Promise<string | undefined> {
  // Noted by a first run only: a retry whose first run noted nothing (it died first, or ran an older release) may
  // have made its version already, and would take it for the baseline.
  if (isRetry(ctx)) return ctx.journal?.noted(BASELINE);
  if (ctx.journal === undefined) return undefined;
  const newest = await provider.listVersions(key, { limit: 1 }).catch((error: unknown) => {
    if (error instanceof NotFoundError) return { items: [] };
    throw error;
  });
  return ctx.journal.noteOnce(BASELINE, newest.items[0]?.versionId ?? '');
}

/** The version of `key` this job made, if an earlier run of it did (see the comment at the top). */
export async function versionMadeBy(
  job: JobRef,
  provider: StorageProvider,
  key: string,
  /** `messages`: what its message may be (a restore without one: the store's default, or none where s3 left it out). */
  expected: { etag: string; messages: readonly (string | undefined)[]; author?: Author },
  baseline?: string,
): Promise<VersionInfo | undefined> {
  const since = job.timestamp - SAME_JOB_SLACK_MS;
  const author = expected.author ?? provider.capabilities.defaultAuthor;
  let cursor: string | undefined;
  for (let scanned = 0; scanned < MAX_VERSIONS_SCANNED; ) {
    let page;
    try {
      page = await provider.listVersions(key, { cursor, limit: SCAN_PAGE });
    } catch (error) {
      if (error instanceof NotFoundError) return undefined;
      throw error;
    }
    for (const version of page.items) {
      // Newest first: the rest is older still, from before this job's first run (or before the job, with the slack).
      if (version.versionId === baseline || Date.parse(version.createdAt) < since) return undefined;
      if (version.etag === expected.etag && expected.messages.includes(version.message) && sameAuthor(version.author, author)) return version;
    }
    scanned += page.items.length;
    if (page.cursor === undefined || page.items.length === 0) return undefined;
    cursor = page.cursor;
  }
  return undefined;
}

export const versionJob = defineJob({
  name: 'version',
  queue: 'objects',
  schema: versionPayload,
  async handle(payload, ctx) {
    const { store, key, body, message, author, contentType, metadata, ifMatch, ifNoneMatch } = payload;
    const provider = storeOf(ctx, store);
    const baseline = await versionBaseline(ctx, provider, key);
    const made = () => versionMadeBy(ctx.job, provider, key, { etag: body.etag, messages: [message], author }, baseline);
    const info = await applyBody(
      ctx,
      body,
      (content) => provider.createVersion(key, content, { message, author, contentType, metadata, ifMatch, ifNoneMatch, expectedEtag: body.etag, fence: ctx.fence }),
      made,
      { retrying: isRetry(ctx) },
    );
    return { result: info, event: { type: 'version.created', store, key, data: info } };
  },
});
