/**
 * The mutation path every route shares: read what the request asks of its job (`Idempotency-Key`, `?wait`) before
 * its body, stream the body into staging (413 before a byte is read when Content-Length is already too large, and
 * as soon as a chunked body passes `MAX_OBJECT_BYTES`), enqueue the job, then answer 202 with the job, or with its
 * result under `?wait=true`.
 *
 * A body that stops arriving for `bodyIdleTimeoutMs` (default 30 s) is answered 408 and nothing is staged: a
 * client cannot hold a connection and a staging file open by trickling nothing. Only idleness counts, not the
 * total time, so a slow but steady upload of a large object is never cut off.
 */
import { Readable, Transform } from 'node:stream';
import type { Context } from 'hono';
import type { JobName, PayloadOf } from '../jobs/index.js';
import { EnqueueUncertainError } from '../jobs/queue.js';
import { isStaged, type BodyRef } from '../jobs/staging.js';
import { PayloadTooLargeError, ProviderUnavailableError, StorageFullError } from '../providers/errors.js';
import type { StorageProvider } from '../providers/types.js';
import type { AppDeps } from './app.js';
import { checkDigests, requestedDigests, trailerDigests } from './content-digest.js';
import { ApiError, redisUnavailable } from './errors.js';
import { jobFailure } from './job-status.js';
import { arrivedBody, incomingOf, requestHeader, requestHeaderCount } from './node-request.js';

const MAX_IDEMPOTENCY_KEY = 256;

export const BODY_IDLE_TIMEOUT_MS = 30_000;

/**
 * The 408 of a body that sent nothing for `idleMs`. The connection closes with it (RFC 9110 §15.5.9): what the
 * client sends later would otherwise be read as the rest of a body nobody wants.
 */
export function bodyTimedOut(idleMs: number): ApiError {
  return new ApiError('REQUEST_TIMEOUT', `the request body sent nothing for ${idleMs} ms`, { Connection: 'close' });
}

/**
 * `body` passed through; `expired()` says whether it was cut off for sending nothing during `idleMs`. Only the
 * client's idleness counts: while what arrived waits in a buffer because staging is slow to take it (an s3 part
 * uploading), the client is not idle, and the timer starts again.
 */
export function idleLimited(body: Readable, idleMs: number): { body: Readable; expired(): boolean } {
  let expired = false;
  const timer = setTimeout(() => {
    // Everything sent (the client ended its body): what is left waits for staging, not for the client.
    if (guarded.writableEnded) return;
    if (body.readableLength > 0 || guarded.writableLength > 0 || guarded.readableLength > 0) {
      timer.refresh();
      return;
    }
    expired = true;
    body.destroy();
    guarded.destroy(bodyTimedOut(idleMs));
  }, idleMs).unref();
  const guarded = new Transform({
    transform(chunk, _encoding, callback) {
      timer.refresh();
      callback(null, chunk);
    },
  });
  guarded.once('close', () => clearTimeout(timer));
  body.once('error', (error) => guarded.destroy(error));
  body.pipe(guarded);
  return { body: guarded, expired: () => expired };
}

/**
 * Stages the request's body for a job. `store`: the store the body is for; one with a limit of its own below
 * `MAX_OBJECT_BYTES` (git) refuses a larger body here, before it is read, rather than in the job after the whole
 * upload was staged. A body that does not match its `Content-Digest` / `Repr-Digest` (headers or trailers) is released
 * and refused.
 */
export async function stageRequestBody(
  c: Context,
  deps: Pick<AppDeps, 'staging' | 'config' | 'bodyIdleTimeoutMs'>,
  store: StorageProvider,
): Promise<BodyRef> {
  const digests = requestedDigests((name) => requestHeader(c, name));
  const staged = await stageBody(c, deps, store).catch((error: unknown) => {
    // The target store may have room: staging fills up only while jobs are behind, and empties as they finish.
    if (error instanceof StorageFullError) {
      throw new ApiError('SERVICE_UNAVAILABLE', 'the staging area for request bodies is full; try again shortly', { 'Retry-After': '5' });
    }
    throw error;
  });
  try {
    checkDigests([...digests, ...digestTrailers(c)], staged.etag, 'the body received');
  } catch (error) {
    await deps.staging.release(staged);
    throw error;
  }
  return staged;
}

/**
 * The digests the request's trailers name. Node has them once the body was read to its end, as staging did; outside
 * Node (`app.request()`) there are none, so one announced in `Trailer` is refused.
 */
export function digestTrailers(c: Context): string[] {
  return trailerDigests(requestHeader(c, 'trailer'), (name) => incomingOf(c)?.trailers[name]);
}

async function stageBody(c: Context, deps: Pick<AppDeps, 'staging' | 'config' | 'bodyIdleTimeoutMs'>, store: StorageProvider): Promise<BodyRef> {
  const storeMax = store.capabilities.maxObjectBytes ?? Number.POSITIVE_INFINITY;
  const maxBytes = Math.min(deps.config.payloads.maxObjectBytes, storeMax);
  const header = requestHeader(c, 'content-length');
  const declared = header === undefined ? undefined : Number(header);
  if (declared !== undefined && declared > maxBytes) {
    const limit = maxBytes === storeMax ? `what this store takes (${maxBytes} bytes)` : `MAX_OBJECT_BYTES=${maxBytes}`;
    throw new PayloadTooLargeError(`body of ${declared} bytes is larger than ${limit}`);
  }
  const idleMs = deps.bodyIdleTimeoutMs ?? BODY_IDLE_TIMEOUT_MS;
  if (declared !== undefined && declared <= deps.staging.inlineMax) {
    // A small body of known length is read at once, before anything touches `c.req.raw.body`: under
    // @hono/node-server that getter builds a web Request and stream, which cost more than the whole write.
    // The route runs as soon as the headers are parsed; a body in the same packet is parsed right after, so one
    // turn of the microtask queue is usually all it takes for it to have arrived.
    const arrived = arrivedBody(c, declared) ?? (await null, arrivedBody(c, declared));
    if (arrived !== undefined) return deps.staging.stageBody(arrived, { maxBytes });
    // Still arriving: streamed like a large body, so that only idleness counts, not how long it takes.
  }
  const raw = c.req.raw.body;
  if (raw === null) return deps.staging.stageBody(new Uint8Array(0), { maxBytes });
  const limited = idleLimited(Readable.fromWeb(raw as import('node:stream/web').ReadableStream<Uint8Array>), idleMs);
  try {
    return await deps.staging.stageBody(limited.body, { maxBytes });
  } catch (error) {
    // However staging reports the broken stream, the client learns why.
    if (limited.expired()) throw bodyTimedOut(idleMs);
    // The client went away mid-body: its request's failure, not the server's (no 500 in the log and the metrics). Its
    // body then failed with an error; one staging gave up on (its store down) was ended without one.
    const incoming = incomingOf(c);
    if (limited.body.errored !== null && (incoming?.readableAborted || incoming?.destroyed)) {
      throw new ApiError('BAD_REQUEST', 'the request body was cut off: the client closed the connection before its end', { Connection: 'close' });
    }
    throw error;
  }
}

/** The request comes with a body: chunked, or of a Content-Length other than 0. */
export function hasBody(c: Context): boolean {
  const length = requestHeader(c, 'content-length');
  return requestHeader(c, 'transfer-encoding') !== undefined || (length !== undefined && Number(length) !== 0);
}

/**
 * 415 unless a body that comes is declared `application/json`. A form or a no-preflight `fetch` from another page can
 * only send text/plain, urlencoded or multipart: a route that takes any body as JSON would take theirs too. A request
 * with neither a body nor a Content-Type passes (an empty body).
 */
export function requireJsonBody(c: Context): void {
  const type = requestHeader(c, 'content-type');
  if (type === undefined ? !hasBody(c) : /^application\/json\s*(?:;|$)/i.test(type)) return;
  throw new ApiError('UNSUPPORTED_MEDIA_TYPE', `a JSON request body is sent with Content-Type: application/json, not ${(type ?? 'none').slice(0, 128)}`);
}

function idempotencyKey(c: Context): string | undefined {
  const key = requestHeader(c, 'idempotency-key');
  if (key === undefined) return undefined;
  // Node joins a repeated header into one value: two keys would silently become a third.
  if (requestHeaderCount(c, 'idempotency-key') > 1) throw new ApiError('BAD_REQUEST', 'Idempotency-Key is given more than once: give it once');
  if (key === '' || key.length > MAX_IDEMPOTENCY_KEY) {
    throw new ApiError('BAD_REQUEST', `Idempotency-Key must be 1..${MAX_IDEMPOTENCY_KEY} characters`);
  }
  return key;
}

/**
 * A query parameter given at most once. A repeated one is refused rather than read as its first value: a mutation
 * (`?prefix=a&prefix=b` on a delete) must not act on one of two meanings.
 */
export function singleQuery(c: Context, name: string): string | undefined {
  const values = c.req.queries(name);
  if (values !== undefined && values.length > 1) throw new ApiError('BAD_REQUEST', `?${name} is given ${values.length} times: give it once`);
  return values?.[0];
}

/** A boolean query flag: `true`, `false` or absent (false). Anything else is refused, not taken as false. */
export function queryFlag(c: Context, name: string): boolean {
  const value = singleQuery(c, name);
  if (value === undefined || value === 'false') return false;
  if (value === 'true') return true;
  throw new ApiError('BAD_REQUEST', `?${name} must be true or false, not "${value.slice(0, 64)}"`);
}

/** What a mutation asks of its job besides the payload. */
export interface JobRequest {
  idempotencyKey?: string;
  /** `?wait=true`: answer with the job's outcome once it completed. */
  wait: boolean;
}

/**
 * Read before the body, so that a malformed one is 400 with nothing staged or enqueued, and under
 * `Expect: 100-continue` the client never sends the body.
 */
export function jobRequest(c: Context): JobRequest {
  return { idempotencyKey: idempotencyKey(c), wait: queryFlag(c, 'wait') };
}

export interface RespondOptions {
  /**
   * What `?wait=true` answers once the job completed: its result (object mutations: the ObjectInfo or VersionInfo),
   * or `{ jobId, state, result }` (maintenance jobs, whose results are reports).
   */
  waitAnswer?: 'result' | 'status';
  /** What makes a repeat of this request under its Idempotency-Key the same request (`EnqueueOptions.fingerprint`). */
  fingerprint?: unknown;
}

export async function respondWithJob<N extends JobName>(
  c: Context,
  deps: AppDeps,
  request: JobRequest,
  name: N,
  payload: PayloadOf<N>,
  { waitAnswer = 'result', fingerprint }: RespondOptions = {},
): Promise<Response> {
  const staged = (payload as { body?: BodyRef }).body;
  const key = request.idempotencyKey;
  let jobId: string;
  try {
    ({ jobId } = await deps.queues.enqueue(name, payload, { idempotencyKey: key, fingerprint }));
  } catch (error) {
    // A job that may exist keeps its body (cleanup removes it after STAGING_TTL if no job came of it): released
    // here, it would fail for want of it, and a retry with the same Idempotency-Key would find that job.
    const mayExist = error instanceof EnqueueUncertainError;
    // Not awaited: with Redis not answering, the release's own Redis command (forgetting the body's owner) would hold
    // the 503 back for another command timeout. A body the release does not get to is cleanup's after STAGING_TTL.
    if (staged !== undefined && isStaged(staged) && !mayExist) void deps.staging.release(staged).catch(() => undefined);
    // The queue reports Redis down as PROVIDER_UNAVAILABLE; to a client it is the service's own queue that is down,
    // answered as /v1/jobs and /v1/events answer it (PROVIDER_UNAVAILABLE is a store that is down).
    throw error instanceof ProviderUnavailableError ? redisUnavailable(error) : error;
  }
  if (key !== undefined && staged !== undefined && isStaged(staged)) {
    // A repeated request finds the first job: the body staged for this one is nobody's.
    const job = await deps.queues.getJob(jobId);
    const kept = (job?.data as { body?: BodyRef } | undefined)?.body;
    if (!kept || !isStaged(kept) || kept.stagedKey !== staged.stagedKey) await deps.staging.release(staged).catch(() => undefined);
  }
  const statusUrl = `/v1/jobs/${jobId}`;
  if (!request.wait) return accepted({ jobId, statusUrl }, statusUrl);
  const status = await deps.waiter.wait(jobId, deps.config.payloads.waitTimeoutMs, c.req.raw.signal);
  if (status === undefined) return accepted({ jobId, statusUrl, state: 'unknown' }, statusUrl);
  if (status.state === 'completed') {
    return c.json(waitAnswer === 'status' ? { jobId, state: status.state, result: status.result ?? null } : (status.result ?? null), 200);
  }
  if (status.state === 'failed') throw jobFailure(status);
  return accepted({ jobId, statusUrl, state: status.state }, statusUrl);
}

/**
 * 202 with the job's status URL, built with plain headers: @hono/node-server writes such a Response straight to
 * the socket, where `c.json(..., headers)` with two headers would build a web Headers object first.
 */
function accepted(body: Record<string, unknown>, statusUrl: string): Response {
  return new Response(JSON.stringify(body), { status: 202, headers: { 'Content-Type': 'application/json', Location: statusUrl } });
}
