/**
 * Job bodies (DESIGN §6). Content up to `STAGING_INLINE_MAX` rides in the job as base64 (a Buffer in BullMQ job
 * data would be stored as a JSON array of numbers, four times larger); anything larger is streamed into the
 * staging provider under `staging/<uuid>` and the job carries only `{ stagedKey, size, etag }`, so Redis never
 * holds a large payload. Either way the job knows the body's sha256, which makes a retried job able to tell that
 * its work is already done.
 *
 * The staging provider is any `StorageProvider`: disk under `<STORAGE_ROOT_DIR>/.staging` by default, s3 with
 * `STAGING_KIND=s3` for web and worker processes that share no filesystem (`createStagingProvider`). The worker
 * deletes a staged blob once its job succeeded (every version of it, in a versioned bucket); blobs of jobs that never
 * ran are the cleanup job's (`STAGING_TTL`).
 */
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { z } from 'zod';
import { ConfigError, type Config } from '../config.js';
import type { Logger } from '../log.js';
import { HashingStream, isReadable, sha256Hex } from '../providers/body.js';
import { InvalidArgumentError, NotFoundError, PayloadTooLargeError } from '../providers/errors.js';
import { createProvider, stagingSettings } from '../providers/index.js';
import type { Body, HealthReport, StorageProvider } from '../providers/types.js';
import type { JobContext } from './definition.js';
import type { StagedOwners } from './staged-owners.js';

export const STAGING_PREFIX = 'staging/';
const STAGED_KEY = /^staging\/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const size = z.number().int().nonnegative();
export const etagSchema = z.string().regex(/^[0-9a-f]{64}$/, 'etag must be a sha256 hex digest');

/** Inline bodies up to this size are decoded for their check into one reused buffer; larger ones into their own. */
const DECODE_SCRATCH_BYTES = 64 * 1024;
let decodeScratch: Buffer | undefined;

/**
 * How many bytes `text` decodes to, as the worker will decode it (Node skips characters outside base64, such as line
 * breaks). Decoding into a reused buffer allocates nothing, and costs a third of what a regular expression over the
 * text does; the size check on the decoded bytes is then exact whatever the text holds.
 */
function decodedLength(text: string): number {
  // The decoded length is at most what the text's length allows: one byte more shows a larger content.
  const room = Buffer.byteLength(text, 'base64') + 1;
  const target = room <= DECODE_SCRATCH_BYTES ? (decodeScratch ??= Buffer.allocUnsafe(DECODE_SCRATCH_BYTES)) : Buffer.allocUnsafe(room);
  return target.write(text, 0, room, 'base64');
}

const inlineBodySchema = z
  .object({ inline: z.string(), size, etag: etagSchema })
  .strict()
  .refine((ref) => decodedLength(ref.inline) === ref.size, { message: 'inline body size does not match its content' });

/**
 * A body its job no longer carries: a completed job's inline body is dropped from the job's data (`withoutInlineBody`)
 * so that the completed jobs Redis keeps for the retention window hold no content. A run that meets one (a completed
 * job retried from the board) does what it does when a staged blob is gone: the work counts as done when the target
 * holds the body's etag.
 */
const droppedBodySchema = z
  // `never` for the other forms' keys: a malformed inline or staged body is then reported by its own form's check.
  .object({ size, etag: etagSchema, inline: z.never().optional(), stagedKey: z.never().optional() })
  .strict();

export const bodyRefSchema = z.union([
  inlineBodySchema,
  z.object({ stagedKey: z.string().regex(STAGED_KEY, 'not a staging key'), size, etag: etagSchema }).strict(),
  droppedBodySchema,
]);
export type BodyRef = z.output<typeof bodyRefSchema>;

export function isStaged(ref: BodyRef): ref is Extract<BodyRef, { stagedKey: string }> {
  return 'stagedKey' in ref;
}

function isInline(ref: BodyRef): ref is Extract<BodyRef, { inline: string }> {
  return 'inline' in ref;
}

/** BullMQ keeps a job's data as JSON in this field of the job's hash. */
export const JOB_DATA_FIELD = 'data';

/**
 * The job data to keep once the job completed: `data` with its inline body replaced by the body's size and etag, or
 * undefined when it carries none. Completed jobs stay in Redis for the retention window (`removeOnComplete`): up to
 * 10,000 of them at ~1.33 times their body each would hold gigabytes of content nobody reads again.
 */
export function withoutInlineBody(data: unknown): Record<string, unknown> | undefined {
  const body = (data as { body?: { inline?: unknown; size?: unknown; etag?: unknown } } | null | undefined)?.body;
  if (typeof body !== 'object' || body === null || body.inline === undefined) return undefined;
  return { ...(data as Record<string, unknown>), body: { size: body.size, etag: body.etag } };
}

export interface Staging {
  readonly inlineMax: number;
  /** Inline when the whole body fits in `inlineMax`, else streamed to the staging provider. */
  stageBody(body: Body, opts?: { maxBytes?: number }): Promise<BodyRef>;
  /** The content again; `NotFoundError` when a staged blob is gone. */
  open(ref: BodyRef): Promise<Body>;
  /** Deletes a staged blob (idempotent); inline bodies need nothing. */
  release(ref: BodyRef): Promise<void>;
  /** The staging provider's health: every body over `inlineMax` passes through it. */
  health(): Promise<HealthReport>;
}

export interface StagingOptions {
  provider: StorageProvider;
  inlineMax: number;
  /** Which job owns each staged body (cleanup spares those still to run); a released body has none. */
  owners?: StagedOwners;
}

function inlineRef(content: Buffer): BodyRef {
  return { inline: content.toString('base64'), size: content.length, etag: sha256Hex(content) };
}

/**
 * Reads from `iterator` until more than `limit` bytes arrived or the stream ended. The iterator is stepped by
 * hand: leaving a `for await` early would destroy the stream we still need for the staged copy.
 */
async function readUpTo(iterator: AsyncIterator<Buffer | string>, limit: number) {
  const chunks: Buffer[] = [];
  let bytes = 0;
  while (bytes <= limit) {
    const next = await iterator.next();
    if (next.done) return { chunks, bytes, ended: true };
    const chunk = typeof next.value === 'string' ? Buffer.from(next.value, 'utf8') : next.value;
    chunks.push(chunk);
    bytes += chunk.length;
  }
  return { chunks, bytes, ended: false };
}

export function createStaging({ provider, inlineMax, owners }: StagingOptions): Staging {
  async function stageStream(
    head: Buffer[],
    iterator: AsyncIterator<Buffer | string>,
    maxBytes: number,
    source?: Readable,
  ): Promise<BodyRef> {
    const stagedKey = `${STAGING_PREFIX}${randomUUID()}`;
    const rest = Readable.from(
      (async function* () {
        yield* head;
        for (let next = await iterator.next(); !next.done; next = await iterator.next()) yield next.value;
      })(),
      { objectMode: false },
    );
    const hashing = new HashingStream(maxBytes);
    const piped = pipeline(rest, hashing);
    try {
      const [info] = await Promise.all([provider.write(stagedKey, hashing), piped]);
      return { stagedKey, size: info.size, etag: info.etag };
    } catch (error) {
      // The provider may wrap the stream's failure; the caller wants to know the body was too large.
      const streamError = hashing.errored;
      hashing.destroy();
      source?.destroy();
      await removeStaged(provider, stagedKey).catch(() => undefined);
      throw streamError instanceof PayloadTooLargeError ? streamError : error;
    }
  }

  return {
    inlineMax,

    async stageBody(body, { maxBytes = Number.POSITIVE_INFINITY } = {}) {
      if (!isReadable(body)) {
        const content = typeof body === 'string' ? Buffer.from(body, 'utf8') : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
        if (content.length > maxBytes) throw new PayloadTooLargeError(`body is larger than ${maxBytes} bytes`);
        if (content.length <= inlineMax) return inlineRef(content);
        return stageStream([content], (async function* () {})(), maxBytes);
      }
      const iterator = (body as AsyncIterable<Buffer | string>)[Symbol.asyncIterator]();
      const head = await readUpTo(iterator, Math.min(inlineMax, maxBytes));
      if (head.bytes > maxBytes) {
        body.destroy();
        throw new PayloadTooLargeError(`body is larger than ${maxBytes} bytes`);
      }
      if (head.ended && head.bytes <= inlineMax) return inlineRef(Buffer.concat(head.chunks, head.bytes));
      return stageStream(head.chunks, iterator, maxBytes, body);
    },

    async open(ref) {
      if (isInline(ref)) {
        const content = Buffer.from(ref.inline, 'base64');
        if (content.length !== ref.size) throw new InvalidArgumentError(`inline body has ${content.length} bytes, the job says ${ref.size}`);
        // Its etag is checked where it is stored: the jobs pass it as the write's `expectedEtag`.
        return content;
      }
      if (!isStaged(ref)) throw new NotFoundError('the inline body was dropped from the job once it completed');
      const { body } = await provider.read(ref.stagedKey);
      return body;
    },

    async release(ref) {
      if (!isStaged(ref)) return;
      // The note first: a body left without one is an orphan cleanup removes, a note left without its body would
      // stay. Redis being down does not keep the body, though (its note, if any, is one small field).
      await owners?.forget(ref.stagedKey).catch(() => undefined);
      await removeStaged(provider, ref.stagedKey);
    },

    health: () => provider.health(),
  };
}

/**
 * Runs `apply` with the job's body, notes the result in the job's journal, then releases the staged blob (once the
 * job's event is out, where the context says when: `JobContext.afterEvent`). A result
 * in the journal means an earlier run of this job finished `apply` (it may have died before the release): that
 * result is the answer, and the work is not done again over what other jobs wrote since. When the staged blob is
 * gone with no journal entry, `alreadyApplied` recognises the work (e.g. the target has the body's etag);
 * otherwise the body is lost for good. `retrying`: an earlier run may have applied the body without journaling it
 * (an inline one), and applying it again would not be harmless (a second version): `alreadyApplied` is asked first.
 */
export async function applyBody<R>(
  ctx: Pick<JobContext, 'staging' | 'journal' | 'log' | 'afterEvent'>,
  ref: BodyRef,
  apply: (body: Body) => Promise<R>,
  alreadyApplied: () => Promise<R | undefined>,
  { retrying = false }: { retrying?: boolean } = {},
): Promise<R> {
  // A staged body is released, and an inline one dropped, only after the job's result was journaled.
  if (!isInline(ref) && ctx.journal !== undefined) {
    const earlier = (await ctx.journal.recall()) as R | undefined;
    if (earlier !== undefined) return releasedAfter(ctx, ref, earlier);
  }
  if (retrying) {
    const done = await alreadyApplied();
    if (done !== undefined) return releasedAfter(ctx, ref, done);
  }
  let body: Body;
  try {
    body = await ctx.staging.open(ref);
  } catch (error) {
    if (error instanceof NotFoundError) {
      const done = retrying ? undefined : await alreadyApplied();
      if (done !== undefined) return done;
      throw new NotFoundError(isStaged(ref) ? `the staged body of this job is gone (${ref.stagedKey})` : (error as Error).message, { cause: error });
    }
    throw error;
  }
  let result: R;
  try {
    result = await apply(body);
  } finally {
    // A provider that failed before reading (a precondition, bad metadata) leaves the staged file open otherwise.
    if (isReadable(body)) body.destroy();
  }
  if (isStaged(ref)) await ctx.journal?.remember(result);
  return releasedAfter(ctx, ref, result);
}

/**
 * `result`, with the staged blob released (or its release left to after the event). The work is done by then: a blob
 * the staging store could not delete fails nothing (its owner note is gone, so the cleanup job removes it after
 * `STAGING_TTL`; so it does one a crash left between the event and the release).
 */
async function releasedAfter<R>(ctx: Pick<JobContext, 'staging' | 'log' | 'afterEvent'>, ref: BodyRef, result: R): Promise<R> {
  if (!isStaged(ref)) return result;
  const release = () =>
    ctx.staging.release(ref).catch((error: unknown) => {
      ctx.log.warn({ err: error, stagedKey: ref.stagedKey }, 'staged body not removed: the cleanup job will');
    });
  if (ctx.afterEvent !== undefined) ctx.afterEvent(release);
  else await release();
  return result;
}

/** The staging provider `STAGING_KIND` names: disk at `<STORAGE_ROOT_DIR>/.staging`, or s3 (`STAGING_S3_*`). */
export async function createStagingProvider(config: Pick<Config, 'env' | 'storageRootDir' | 'payloads'>, log?: Logger): Promise<StorageProvider> {
  const settings = stagingSettings(config);
  if (settings.kind === 's3' && settings.S3_BUCKET === undefined) {
    throw new ConfigError('the staging area (STAGING_KIND=s3): STAGING_S3_BUCKET (or S3_BUCKET) is required');
  }
  return createProvider(settings, { log });
}

/**
 * Deletes a staged blob; on a staging store that keeps every write as a version (a versioned bucket), its versions
 * too, which would otherwise stay (and be billed) after every upload.
 */
export function removeStaged(provider: StorageProvider, stagedKey: string): Promise<void> {
  return provider.delete(stagedKey, provider.capabilities.versioning === 'every-write' ? { allVersions: true } : undefined);
}
