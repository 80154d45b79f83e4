/**
 * The components of `/openapi.json`: the JSON schemas of what the API answers (written against the TypeScript types,
 * so tsc fails when a type gains a field not described here), the error codes with their statuses, and the response
 * headers. The route table that refers to them is `openapi.ts`.
 */
import { EVENT_TYPES, type EventEnvelope } from '../events/bus.js';
import type { DeleteResult } from '../jobs/delete.js';
import type { DeletePrefixResult } from '../jobs/delete-prefix.js';
import type { RestoreResult } from '../jobs/restore.js';
import type { Author, Capabilities, HealthReport, ObjectInfo, ProviderStats, VersionInfo } from '../providers/types.js';
import { ApiError, type ApiErrorCode } from './errors.js';
import type { JobStatus } from './job-status.js';
import type { Redelivered } from './routes/webhooks.js';

export type JsonSchema = Record<string, unknown>;

export const ref = (name: string): JsonSchema => ({ $ref: `#/components/schemas/${name}` });
export const json = (schema: JsonSchema): Record<string, { schema: JsonSchema }> => ({ 'application/json': { schema } });
export const STRING = { type: 'string' };
const INTEGER = { type: 'integer', minimum: 0 };
const DATE = { type: 'string', format: 'date-time' };
const ETAG = { type: 'string', description: 'sha256 of the content, hex' };

interface Optional {
  optional: JsonSchema;
}
/** A property schema for each field of `T`, optional fields wrapped: tsc fails when `T` gains a field not written here. */
type Fields<T> = { [K in keyof T]-?: {} extends Pick<T, K> ? Optional : JsonSchema };
const optional = (schema: JsonSchema): Optional => ({ optional: schema });

function objectSchema<T>(fields: Fields<T>, description?: string): JsonSchema {
  const entries = Object.entries(fields) as [string, JsonSchema | Optional][];
  return {
    type: 'object',
    ...(description === undefined ? {} : { description }),
    properties: Object.fromEntries(entries.map(([name, field]) => [name, 'optional' in field ? field.optional : field])),
    required: entries.filter(([, field]) => !('optional' in field)).map(([name]) => name),
  };
}

const NEXT_CURSOR = optional({ type: 'string', description: 'Present when there is a next page: pass it as ?cursor=' });
const pageOf = (item: string): JsonSchema => objectSchema<{ items: unknown[]; cursor?: string }>({ items: { type: 'array', items: ref(item) }, cursor: NEXT_CURSOR });

/** What each error code means to a client; its status is the one `ApiError` answers it with. */
const ERROR_CODES: Record<ApiErrorCode, string> = {
  BAD_REQUEST: 'a malformed query parameter, header or JSON body',
  BAD_DIGEST: 'the body received (or a copy\'s source) does not match the sha-256 its Content-Digest or Repr-Digest names (as headers or trailers); nothing was stored',
  INVALID_KEY: 'the key (or a path segment) is not a valid key',
  INVALID_ARGUMENT: 'a well-formed request the store or the job cannot honour (metadata, cursor, a maintenance body)',
  UNAUTHORIZED: 'no valid bearer token (or basic credentials on the board)',
  FORBIDDEN:
    'a signed URL whose signature is missing, tampered with or expired, or that was signed for another method or key; a browser request from another site that would change something (Origin, Sec-Fetch-Site); or, without API_TOKENS, a Host that is not loopback',
  PERMISSION_DENIED: 'the store’s backend refused (S3 credentials or policy, file permissions)',
  NOT_FOUND: 'no such store, object, version, job, manifest or route',
  METHOD_NOT_ALLOWED: 'a method the path does not answer; Allow lists those it does',
  REQUEST_TIMEOUT: 'the request body sent nothing for 30 s',
  HEADERS_TOO_LARGE: 'the request’s headers are over 16 KiB (Node’s limit): refused before they are read',
  PRECONDITION_FAILED: 'a condition (If-Match, If-None-Match: *, If-Unmodified-Since) does not hold',
  PAYLOAD_TOO_LARGE: 'the body is larger than the limit',
  UNSUPPORTED_MEDIA_TYPE: 'a body in a content coding (Content-Encoding)',
  RANGE_NOT_SATISFIABLE: 'a malformed bytes range, or none inside the object',
  NOT_SUPPORTED: 'something this store or route does not do (diff on a store without it, a condition a mutation cannot honour)',
  STORAGE_FULL: 'the store is full (RAM_MAX_BYTES, a full disk)',
  DATA_CORRUPTED: 'the object (or version) is damaged where it is stored; retrying does not help, writing the key again replaces it',
  PROVIDER_UNAVAILABLE: 'a store cannot be reached now; Retry-After',
  SERVICE_UNAVAILABLE: 'the job queue (Redis) cannot be reached, or a job failed in a way a retry may fix; Retry-After',
  INTERNAL: 'a failure outside the contract; its message points at the X-Request-Id header',
};

const errorCodeList = Object.entries(ERROR_CODES)
  .map(([code, meaning]) => `\`${code}\` ${new ApiError(code as ApiErrorCode, '').status}: ${meaning}`)
  .join('; ');

const author = objectSchema<Author>({ name: STRING, email: optional(STRING) });
const versionFields: Fields<VersionInfo> = {
  versionId: STRING,
  key: STRING,
  size: INTEGER,
  etag: ETAG,
  createdAt: DATE,
  message: optional(STRING),
  author: optional(ref('Author')),
};
/** `detail` and `latencyMs` are left out of `/ready` without a bearer token. */
const healthReport = objectSchema<Pick<HealthReport, 'status'> & Partial<HealthReport>>({
  status: { enum: ['ok', 'degraded', 'down'] },
  detail: optional(STRING),
  latencyMs: optional({ type: 'number' }),
});
const diffSide = { oneOf: [objectSchema<{ size: number; etag: string }>({ size: INTEGER, etag: ETAG }), { type: 'null' }] };

export const schemas: Record<string, JsonSchema> = {
  Error: {
    type: 'object',
    required: ['error'],
    properties: {
      error: {
        type: 'object',
        required: ['code', 'message'],
        properties: { code: { enum: Object.keys(ERROR_CODES), description: errorCodeList }, message: STRING },
      },
    },
  },
  ObjectInfo: objectSchema<ObjectInfo>({
    key: STRING,
    size: INTEGER,
    etag: ETAG,
    contentType: STRING,
    metadata: { type: 'object', additionalProperties: STRING, description: 'The X-Meta-* entries, names lower-cased' },
    updatedAt: DATE,
    versionId: optional(STRING),
    tier: optional({ enum: ['hot', 'cold', 'backup'], description: 'Hybrid stores: the tier that served it (`backup`: its primary was down, the answer may lag)' }),
  }),
  Author: author,
  VersionInfo: objectSchema<VersionInfo>(versionFields),
  RestoreResult: objectSchema<RestoreResult>({ ...versionFields, restoredFrom: { type: 'string', description: 'The version restored' } }),
  DeleteResult: objectSchema<DeleteResult>({ key: STRING, deleted: { const: true }, allVersions: { type: 'boolean' } }),
  DeletePrefixResult: objectSchema<DeletePrefixResult>({
    prefix: STRING,
    deleted: { type: 'integer', minimum: 0, description: 'Keys the job listed and deleted, over all its runs' },
    allVersions: { type: 'boolean' },
  }),
  ObjectPage: objectSchema<{ items: unknown[]; prefixes?: string[]; cursor?: string }>({
    items: { type: 'array', items: ref('ObjectInfo') },
    prefixes: optional({ type: 'array', items: STRING, description: 'With `delimiter`: the common prefixes of this page, each ending with the delimiter' }),
    cursor: NEXT_CURSOR,
  }),
  VersionPage: pageOf('VersionInfo'),
  JobAccepted: objectSchema<{ jobId: string; statusUrl: string; state?: string }>({
    jobId: STRING,
    statusUrl: { type: 'string', description: '`/v1/jobs/<jobId>` (bearer token), also in Location' },
    state: optional({ type: 'string', description: 'Under ?wait=true, when the job had not finished within WAIT_TIMEOUT_MS' }),
  }),
  JobStatus: objectSchema<JobStatus>({
    id: STRING,
    name: STRING,
    state: { type: 'string', description: 'waiting, delayed, active, completed, failed...' },
    attemptsMade: INTEGER,
    attempts: INTEGER,
    progress: {},
    result: optional({}),
    failedReason: optional(STRING),
    store: optional(STRING),
    key: optional(STRING),
    createdAt: DATE,
    processedAt: optional(DATE),
    finishedAt: optional(DATE),
  }),
  Redelivered: objectSchema<Redelivered>({
    redelivered: INTEGER,
    webhooks: {
      type: 'array',
      description: 'One entry per URL of WEBHOOK_URLS, named by its origin and delivery queue (its path may hold a secret)',
      items: objectSchema<Redelivered['webhooks'][number]>({ queue: STRING, origin: STRING, redelivered: INTEGER }),
    },
  }),
  MaintenanceOutcome: objectSchema<{ jobId: string; state: string; result: unknown }>({
    jobId: STRING,
    state: { const: 'completed' },
    result: { description: 'The job’s report' },
  }),
  Diff: {
    type: 'object',
    required: ['key', 'from', 'to', 'binary'],
    properties: {
      key: STRING,
      from: { type: 'string', description: 'The commit `from` resolved to' },
      to: { type: 'string', description: 'The commit `to` resolved to' },
      binary: { type: 'boolean' },
    },
    oneOf: [
      {
        properties: { binary: { const: false }, patch: { type: 'string', description: 'Unified diff' }, additions: INTEGER, deletions: INTEGER },
        required: ['patch', 'additions', 'deletions'],
      },
      {
        description: 'Binary content: sizes and etags of each side, null where the key does not exist',
        properties: { binary: { const: true }, before: diffSide, after: diffSide },
        required: ['before', 'after'],
      },
    ],
  },
  SignedUrl: objectSchema<{ url: string; expiresAt: string }>({ url: { type: 'string', format: 'uri' }, expiresAt: DATE }),
  Capabilities: objectSchema<Capabilities>({
    versioning: { enum: ['explicit', 'every-write'] },
    presign: { enum: ['native', 'signed-url'] },
    diff: { type: 'boolean' },
    branches: { type: 'boolean' },
    rangeReads: { type: 'boolean' },
    defaultAuthor: optional(ref('Author')),
    maxObjectBytes: optional({ type: 'integer', minimum: 1, description: 'The largest object this store takes, when below MAX_OBJECT_BYTES (git: 1 GiB)' }),
  }),
  StoreList: objectSchema<{ items: unknown[] }>({
    items: {
      type: 'array',
      items: objectSchema<{ name: string; kind: string; capabilities: unknown }>({
        name: STRING,
        kind: { enum: ['disk', 'ram', 'git', 's3', 'hybrid'] },
        capabilities: ref('Capabilities'),
      }),
    },
  }),
  StoreStats: objectSchema<ProviderStats>({
    kind: STRING,
    objects: INTEGER,
    bytes: INTEGER,
    versions: INTEGER,
    ops: optional({ type: 'object', description: 'Per operation: count, errors, latency { count, p50Ms, p99Ms }' }),
    detail: optional({ type: 'object' }),
  }),
  Health: objectSchema<{ status: 'ok'; uptimeSeconds: number }>({ status: { const: 'ok' }, uptimeSeconds: INTEGER }),
  Readiness: objectSchema<{ status: string; redis: unknown; staging: unknown; stores: unknown; workers?: unknown; storesWithoutWorker?: unknown }>({
    status: { enum: ['ok', 'degraded', 'down'], description: '`degraded` (200): a part reads but cannot write, as a full disk' },
    redis: healthReport,
    staging: healthReport,
    stores: { type: 'object', additionalProperties: healthReport },
    workers: optional({
      type: 'object',
      additionalProperties: INTEGER,
      description: 'Workers connected to each job queue (0: its jobs wait for a worker process; not counted in `status`). Absent when Redis cannot tell',
    }),
    storesWithoutWorker: optional({
      type: 'array',
      items: STRING,
      description:
        'Stores of this process that no connected object worker serves (their jobs would fail NOT_FOUND; not counted in `status`). Absent with no worker connected, or one that does not say its stores',
    }),
  }),
  EventEnvelope: objectSchema<EventEnvelope>(
    {
      id: { type: 'string', description: 'The event id (a Redis stream id), also the SSE `id:`' },
      type: { enum: [...EVENT_TYPES] },
      at: DATE,
      store: optional(STRING),
      key: optional(STRING),
      jobId: optional(STRING),
      data: { description: 'What the job produced (ObjectInfo, VersionInfo, a report...)' },
    },
    'The `data:` of each event of /v1/events, as JSON',
  ),
};

export const headerSchemas: Record<string, { description: string; schema: JsonSchema }> = {
  Location: { description: 'The job’s status URL', schema: STRING },
  'Retry-After': { description: 'Seconds to wait before trying again', schema: { type: 'integer' } },
  'WWW-Authenticate': { description: 'The scheme to authenticate with', schema: STRING },
  'Content-Range': { description: '`bytes <first>-<last>/<size>` (206), `bytes */<size>` (416)', schema: STRING },
  'Accept-Encoding': { description: '`identity`: send the body without a content coding', schema: STRING },
  ETag: { description: 'The content’s sha256, quoted (a strong validator)', schema: STRING },
  'Repr-Digest': { description: 'The whole object’s sha-256 (RFC 9530, `sha-256=:<base64>:`; the ETag’s hash), a range’s answer included', schema: STRING },
  'Last-Modified': { description: 'HTTP-date of the last write', schema: STRING },
  'X-Kyozo-Version': { description: 'The version read (stores that record versions)', schema: STRING },
  'X-Kyozo-Tier': { description: 'Hybrid stores: the tier that answered (`hot`, `cold`, or `backup` while cold is down)', schema: STRING },
  'Cache-Control': { description: 'Objects: `private, no-cache` (revalidate before each use); the event stream: `no-cache`', schema: STRING },
  'Accept-Ranges': { description: '`bytes`', schema: STRING },
};

/** The headers each status carries wherever it is answered. */
export const statusHeaders: Record<number, string[]> = {
  202: ['Location'],
  401: ['WWW-Authenticate'],
  416: ['Content-Range'],
  503: ['Retry-After'],
};
