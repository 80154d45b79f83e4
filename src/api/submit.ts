/**
 * The mutation path every route shares: stream the request body into staging (413 before a byte is read when
 * Content-Length is already too large, and as soon as a chunked body passes `MAX_OBJECT_BYTES`), enqueue the job
 * with the request's `Idempotency-Key`, then answer 202 with the job, or with its result under `?wait=true`.
 */
import { Readable } from 'node:stream';
import type { Context } from 'hono';
import type { JobName, PayloadOf } from '../jobs/index.js';
import { isStaged, type BodyRef } from '../jobs/staging.js';
import { PayloadTooLargeError } from '../providers/errors.js';
import type { AppDeps } from './app.js';
import { ApiError } from './errors.js';
import { jobFailure } from './job-status.js';

const MAX_IDEMPOTENCY_KEY = 256;

export async function stageRequestBody(c: Context, deps: Pick<AppDeps, 'staging' | 'config'>): Promise<BodyRef> {
  const maxBytes = deps.config.payloads.maxObjectBytes;
  const declared = c.req.header('content-length');
  if (declared !== undefined && Number(declared) > maxBytes) {
    throw new PayloadTooLargeError(`body of ${declared} bytes is larger than MAX_OBJECT_BYTES=${maxBytes}`);
  }
  const raw = c.req.raw.body;
  const body = raw === null ? new Uint8Array(0) : Readable.fromWeb(raw as import('node:stream/web').ReadableStream<Uint8Array>);
  return deps.staging.stageBody(body, { maxBytes });
}

function idempotencyKey(c: Context): string | undefined {
  const key = c.req.header('idempotency-key');
  if (key === undefined) return undefined;
  if (key === '' || key.length > MAX_IDEMPOTENCY_KEY) {
    throw new ApiError('BAD_REQUEST', `Idempotency-Key must be 1..${MAX_IDEMPOTENCY_KEY} characters`);
  }
  return key;
}

export async function respondWithJob<N extends JobName>(c: Context, deps: AppDeps, name: N, payload: PayloadOf<N>): Promise<Response> {
  const staged = (payload as { body?: BodyRef }).body;
  const key = idempotencyKey(c);
  let jobId: string;
  try {
    ({ jobId } = await deps.queues.enqueue(name, payload, { idempotencyKey: key }));
  } catch (error) {
    if (staged !== undefined && isStaged(staged)) await deps.staging.release(staged).catch(() => undefined);
    throw error;
  }
  if (key !== undefined && staged !== undefined && isStaged(staged)) {
    // A repeated request finds the first job: the body staged for this one is nobody's.
    const job = await deps.queues.getJob(jobId);
    const kept = (job?.data as { body?: BodyRef } | undefined)?.body;
    if (!kept || !isStaged(kept) || kept.stagedKey !== staged.stagedKey) await deps.staging.release(staged).catch(() => undefined);
  }
  const statusUrl = `/v1/jobs/${jobId}`;
  if (c.req.query('wait') !== 'true') return c.json({ jobId, statusUrl }, 202, { Location: statusUrl });
  const status = await deps.waiter.wait(jobId, deps.config.payloads.waitTimeoutMs);
  if (status.state === 'completed') return c.json(status.result ?? null, 200);
  if (status.state === 'failed') throw jobFailure(status);
  return c.json({ jobId, statusUrl, state: status.state }, 202, { Location: statusUrl });
}
