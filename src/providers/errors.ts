/**
 * The contract's typed errors. Every provider throws these (wrapping its own failure as `cause`), and one
 * table, `errorTable`, says what each code means to an HTTP client and to the job queue. Nothing matches on
 * message strings.
 */

export type ErrorCode =
  | 'NOT_FOUND'
  | 'INVALID_KEY'
  | 'INVALID_ARGUMENT'
  | 'PRECONDITION_FAILED'
  | 'PAYLOAD_TOO_LARGE'
  | 'RANGE_NOT_SATISFIABLE'
  | 'STORAGE_FULL'
  | 'PERMISSION_DENIED'
  | 'NOT_SUPPORTED'
  | 'DATA_CORRUPTED'
  | 'PROVIDER_UNAVAILABLE';

/** How each code surfaces: its HTTP status, and whether a job that met it may succeed when retried. */
export const errorTable: Record<ErrorCode, { status: number; retryable: boolean }> = {
  NOT_FOUND: { status: 404, retryable: false },
  INVALID_KEY: { status: 400, retryable: false },
  INVALID_ARGUMENT: { status: 400, retryable: false },
  PRECONDITION_FAILED: { status: 412, retryable: false },
  PAYLOAD_TOO_LARGE: { status: 413, retryable: false },
  RANGE_NOT_SATISFIABLE: { status: 416, retryable: false },
  // A full store frees up only when something is deleted: retrying on a timer would not help.
  STORAGE_FULL: { status: 507, retryable: false },
  PERMISSION_DENIED: { status: 403, retryable: false },
  NOT_SUPPORTED: { status: 501, retryable: false },
  // Damaged at rest: it stays damaged until the object is written again, so a retry only delays the failure.
  DATA_CORRUPTED: { status: 500, retryable: false },
  PROVIDER_UNAVAILABLE: { status: 503, retryable: true },
};

export class StorageError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }

  get status(): number {
    return errorTable[this.code].status;
  }

  get retryable(): boolean {
    return errorTable[this.code].retryable;
  }
}

export class NotFoundError extends StorageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('NOT_FOUND', message, options);
  }
}

export class InvalidKeyError extends StorageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('INVALID_KEY', message, options);
  }
}

/** A well-formed key with an argument that cannot be honoured (a bad range, metadata that is too large). */
export class InvalidArgumentError extends StorageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('INVALID_ARGUMENT', message, options);
  }
}

/** A write whose content does not hash to its `expectedEtag`: it changed on its way, and nothing was stored. */
export class UnexpectedContentError extends InvalidArgumentError {
  constructor(
    message: string,
    readonly expected: string,
    readonly actual: string,
  ) {
    super(message);
  }
}

export class PreconditionFailedError extends StorageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PRECONDITION_FAILED', message, options);
  }
}

export class PayloadTooLargeError extends StorageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PAYLOAD_TOO_LARGE', message, options);
  }
}

export class RangeNotSatisfiableError extends StorageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('RANGE_NOT_SATISFIABLE', message, options);
  }
}

/** The store's byte budget would be exceeded (ram): distinct from one body being too large. */
export class StorageFullError extends StorageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('STORAGE_FULL', message, options);
  }
}

export class PermissionDeniedError extends StorageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PERMISSION_DENIED', message, options);
  }
}

export class NotSupportedError extends StorageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('NOT_SUPPORTED', message, options);
  }
}

/**
 * Stored data that cannot be read back as it was written: a record cut short by a crash, content that no longer
 * matches its etag.
 */
export class DataCorruptedError extends StorageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('DATA_CORRUPTED', message, options);
  }
}

/** The backend cannot be reached right now; the only error worth retrying. */
export class ProviderUnavailableError extends StorageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PROVIDER_UNAVAILABLE', message, options);
  }
}

/**
 * The backend answered, with what every request gets until its configuration changes (an S3 bucket in another
 * region). Unavailable to callers — 503, and a job waits, parked, for an operator to mend it — but neither retried
 * within the call nor counted by the circuit breaker (`resilience.ts`), whose "circuit open" would hide the cause.
 */
export class MisconfiguredBackendError extends ProviderUnavailableError {}

export function isStorageError(error: unknown): error is StorageError {
  return error instanceof StorageError;
}

/**
 * What a Node or library error is, as a client may be told: its code (`EMFILE`, `EIO`), else its class name. Never
 * its message: a filesystem error's message holds absolute paths.
 */
export function failureCode(error: unknown): string {
  const code = (error as { code?: unknown } | null | undefined)?.code;
  if (typeof code === 'string' || typeof code === 'number') return String(code);
  return error instanceof Error ? error.name : typeof error;
}
