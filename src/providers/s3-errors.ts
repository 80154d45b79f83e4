/**
 * S3 failures as contract errors, in one place. The SDK throws `S3ServiceException`s (a `name`/`Code` and
 * `$metadata.httpStatusCode`) for answers and plain Node errors (`code` ECONNREFUSED...) when there is no answer;
 * both keep the original as `cause`. Only "the backend cannot serve us now" becomes `ProviderUnavailableError`,
 * the one retryable error: throttling, 5xx, timeouts and network failures. A failure that is not the endpoint's
 * (a bug, a header Node refuses to send) is not retried and does not count towards opening the circuit.
 */
import {
  InvalidArgumentError,
  MisconfiguredBackendError,
  NotFoundError,
  NotSupportedError,
  PayloadTooLargeError,
  PermissionDeniedError,
  PreconditionFailedError,
  ProviderUnavailableError,
  RangeNotSatisfiableError,
  StorageError,
} from './errors.js';

interface SdkErrorShape {
  name?: string;
  code?: string;
  Code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
  $response?: { headers?: Record<string, string | undefined> };
}

const NOT_FOUND = new Set(['NoSuchKey', 'NotFound', 'NoSuchVersion']);
const PRECONDITION = new Set(['PreconditionFailed', 'ConditionalRequestConflict']);
const PERMISSION = new Set(['AccessDenied', 'Forbidden', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AllAccessDisabled', 'ExpiredToken', 'InvalidToken']);
/** "Try again" answers; OperationAborted is a 409 that says a conflicting operation on the resource is under way. */
const THROTTLING = new Set(['SlowDown', 'Throttling', 'ThrottlingException', 'TooManyRequestsException', 'RequestLimitExceeded', 'RequestThrottled', 'ServiceUnavailable', 'InternalError', 'RequestTimeout', 'RequestTimeoutException', 'OperationAborted']);
const UNSUPPORTED = new Set(['NotImplemented', 'MethodNotAllowed', 'XNotImplemented']);
const ARGUMENT = new Set(['MetadataTooLarge', 'KeyTooLongError', 'InvalidArgument', 'InvalidRequest', 'InvalidObjectName', 'MalformedXML']);
/** Failures before any answer arrived: the request may be sent again. */
const NETWORK = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ECONNABORTED',
  'UND_ERR_SOCKET',
  'ERR_STREAM_PREMATURE_CLOSE',
  'TimeoutError',
  'AbortError',
]);

/**
 * `what` names the operation for the message, e.g. `read "a/b"`. A failure that neither came from the endpoint nor
 * met the network comes back unchanged: it is no storage error.
 */
export function toStorageError(error: unknown, what: string): unknown {
  if (error instanceof StorageError) return error;
  const e = (typeof error === 'object' && error !== null ? error : {}) as SdkErrorShape;
  const status = e.$metadata?.httpStatusCode;
  const code = e.Code ?? e.code ?? e.name ?? 'Error';
  const detail = `${what}: ${code}${status ? ` (HTTP ${status})` : ''}${e.message && e.message !== code ? `: ${e.message}` : ''}`;
  const options = { cause: error };

  if (code === 'NoSuchBucket') return new ProviderUnavailableError(`${detail} (the store's bucket does not exist)`, options);
  // The bucket is served by another endpoint (another region): every request gets the same answer until AWS_REGION or
  // S3_ENDPOINT changes. Not retried nor counted, but unavailable (503, jobs parked) until an operator mends it, not
  // the caller's mistake. A HEAD's 301 has only the status.
  if (code === 'PermanentRedirect' || status === 301) return new MisconfiguredBackendError(`${detail} (${wrongEndpoint(e)})`, options);
  if (NOT_FOUND.has(code) || status === 404) return new NotFoundError(detail, options);
  if (PRECONDITION.has(code) || status === 412) return new PreconditionFailedError(detail, options);
  if (PERMISSION.has(code) || status === 403 || status === 401) return new PermissionDeniedError(detail, options);
  if (code === 'InvalidRange' || status === 416) return new RangeNotSatisfiableError(detail, options);
  if (code === 'EntityTooLarge' || status === 413) return new PayloadTooLargeError(detail, options);
  if (THROTTLING.has(code) || status === 429 || (status !== undefined && status >= 500 && status !== 501)) {
    return new ProviderUnavailableError(detail, options);
  }
  if (UNSUPPORTED.has(code) || status === 501 || status === 405) return new NotSupportedError(detail, options);
  if (ARGUMENT.has(code) || (status !== undefined && status >= 400 && status < 500)) return new InvalidArgumentError(detail, options);
  if (NETWORK.has(code)) return new ProviderUnavailableError(`${detail} (no answer from the endpoint)`, options);
  // No credentials: none configured, or their source (instance metadata, a container agent, SSO) did not answer; the
  // SDK says the same for both. Nothing was sent. Unavailable rather than refused: the writes accepted meanwhile are
  // parked and land once credentials load (a source that answers again, or the configuration fixed).
  if (code === 'CredentialsProviderError') {
    return new ProviderUnavailableError(`${detail} (no credentials: none are configured, or their source did not answer)`, options);
  }
  // An answer the SDK could not read (a truncated or garbled response): sending the request again may help.
  if (e.$metadata !== undefined) return new ProviderUnavailableError(detail, options);
  // Node refuses to send a header with characters outside latin1, before any byte leaves.
  if (code === 'ERR_INVALID_CHAR') return new InvalidArgumentError(detail, options);
  return error;
}

/** Where a 301 says the bucket is: S3 names its region in `x-amz-bucket-region`. */
function wrongEndpoint(e: SdkErrorShape): string {
  const region = e.$response?.headers?.['x-amz-bucket-region'];
  const where = region === undefined ? 'is not served at this endpoint' : `is in region ${region}`;
  return `the store's bucket ${where}: set AWS_REGION or S3_ENDPOINT to match`;
}
