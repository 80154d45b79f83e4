/**
 * How every failure reaches an HTTP client: JSON `{ error: { code, message } }` with the status from the one
 * table in `providers/errors.ts`. Errors outside the contract never show their stack or message: they are logged
 * with the request id and answered as a generic 500.
 */
import type { Context } from 'hono';
import { ZodError } from 'zod';
import { errorTable, isStorageError, type ErrorCode } from '../providers/errors.js';
import { RedisNotReadyError } from '../redis.js';

/** Errors of the HTTP layer itself, beside the contract's codes. */
export type ApiErrorCode =
  | ErrorCode
  | 'UNAUTHORIZED'
  | 'FORBIDDEN'
  | 'BAD_REQUEST'
  | 'BAD_DIGEST'
  | 'METHOD_NOT_ALLOWED'
  | 'REQUEST_TIMEOUT'
  | 'HEADERS_TOO_LARGE'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'SERVICE_UNAVAILABLE'
  | 'INTERNAL';

const apiStatus: Record<Exclude<ApiErrorCode, ErrorCode>, number> = {
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  BAD_REQUEST: 400,
  BAD_DIGEST: 400,
  METHOD_NOT_ALLOWED: 405,
  REQUEST_TIMEOUT: 408,
  HEADERS_TOO_LARGE: 431,
  UNSUPPORTED_MEDIA_TYPE: 415,
  SERVICE_UNAVAILABLE: 503,
  INTERNAL: 500,
};

export class ApiError extends Error {
  constructor(
    readonly code: ApiErrorCode,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }

  get status(): number {
    return this.code in apiStatus ? apiStatus[this.code as keyof typeof apiStatus] : errorTable[this.code as ErrorCode].status;
  }
}

/** Redis (the queue and the event bus) cannot be reached: answer 503 with a hint when to come back. */
export function redisUnavailable(cause: unknown): ApiError {
  const error = new ApiError('SERVICE_UNAVAILABLE', 'the job queue (Redis) is unavailable; try again shortly', { 'Retry-After': '5' });
  error.cause = cause;
  return error;
}

/** Throws the 503 of `redisUnavailable` unless `redis` is connected now. */
export function requireRedisReady(redis: { status: string }): void {
  if (redis.status !== 'ready') throw redisUnavailable(new Error(`Redis is ${redis.status}`));
}

/** ioredis's ways of saying Redis is out of reach; `Command timed out` is a producer's commandTimeout (Redis frozen). */
const REDIS_DOWN = /ECONNREFUSED|Connection is closed|Stream isn't writeable|MaxRetriesPerRequest|ETIMEDOUT|Reached the max retries|Command timed out/;

export function isRedisDown(error: unknown): boolean {
  return error instanceof Error && (error.name === 'MaxRetriesPerRequestError' || error instanceof RedisNotReadyError || REDIS_DOWN.test(error.message));
}

export function toApiError(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  if (isStorageError(error)) {
    const apiError = new ApiError(error.code, error.message, error.code === 'PROVIDER_UNAVAILABLE' ? { 'Retry-After': '5' } : {});
    apiError.cause = error;
    return apiError;
  }
  if (error instanceof ZodError) {
    const issue = error.issues[0];
    const where = issue && issue.path.length > 0 ? `${issue.path.join('.')}: ` : '';
    return new ApiError('BAD_REQUEST', `${where}${issue?.message ?? 'invalid request'}`);
  }
  if (isRedisDown(error)) return redisUnavailable(error);
  const internal = new ApiError('INTERNAL', 'internal error; the request id is in the X-Request-Id header');
  internal.cause = error;
  return internal;
}

export function errorBody(error: ApiError): { error: { code: ApiErrorCode; message: string } } {
  return { error: { code: error.code, message: error.message } };
}

export function respondWithError(c: Context, error: ApiError): Response {
  for (const [name, value] of Object.entries(error.headers)) c.header(name, value);
  return c.json(errorBody(error), error.status as 400);
}
