/**
 * How a handler's error reaches BullMQ. Contract errors that cannot succeed on a retry (`errorTable[code]
 * .retryable` false: bad key, not found, precondition failed, too large...) become `UnrecoverableError`, so the
 * job fails at once; `ProviderUnavailableError` and anything unknown (a dropped connection, a bug that a restart
 * may clear) are rethrown as they are and retried with backoff until the attempts run out.
 *
 * The failure reason keeps the code in front (`NOT_FOUND: ...`), so `GET /v1/jobs/:id` and `job.failed` events
 * say what happened without anyone matching on messages.
 */
import { UnrecoverableError } from 'bullmq';
import { errorTable, isStorageError, type ErrorCode } from '../providers/errors.js';

export function asJobFailure(error: unknown): Error {
  if (error instanceof UnrecoverableError) return error;
  if (isStorageError(error)) {
    const reason = `${error.code}: ${error.message}`;
    if (errorTable[error.code].retryable) return new Error(reason, { cause: error });
    const failure = new UnrecoverableError(reason);
    (failure as Error & { cause?: unknown }).cause = error;
    return failure;
  }
  return error instanceof Error ? error : new Error(String(error));
}

/** The contract code a failure reason starts with, if any. */
export function failureCode(reason: string | undefined): ErrorCode | undefined {
  const code = /^([A-Z_]+): /.exec(reason ?? '')?.[1];
  return code !== undefined && code in errorTable ? (code as ErrorCode) : undefined;
}

/** Failures of BullMQ's own that say what happened and nothing of the service's insides. */
const PLAIN_REASONS = new Set(['job stalled more than allowable limit']);

/**
 * A failure reason as clients see it (job status, `job.failed` events, `?wait=true`): a contract error's text, or for
 * anything else — a bug's TypeError, a system error naming a server path — a fixed text, as the API answers an
 * internal error. The worker's log and the board keep the real one.
 */
export function publicReason(reason: string, jobId: string): string {
  if (failureCode(reason) !== undefined || PLAIN_REASONS.has(reason)) return reason;
  return `failed outside the error contract: the worker's log has the reason (job ${jobId})`;
}
