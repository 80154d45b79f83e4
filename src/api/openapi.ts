/**
 * The route table: every route the API serves, with its method, OpenAPI path, how it is authenticated, the query
 * parameters and request headers it reads, its body and every status it answers. `/openapi.json` is generated from
 * it, and the API tests check that every route Hono has is in it (so a new route cannot go undocumented, nor escape
 * the 401 tests that are generated from it), that each route reads exactly the query parameters listed here, and
 * that each path refuses other methods with the `Allow` this table implies.
 */
import { z } from 'zod';
import { EVENT_TYPES } from '../events/bus.js';
import { jobs } from '../jobs/index.js';
import { MAX_METADATA_BYTES } from '../providers/metadata.js';
import type { MAINTENANCE_TASKS } from './routes/maintenance.js';
import { headerSchemas, json, ref, schemas, statusHeaders, STRING, type JsonSchema } from './openapi-schemas.js';
import { MAX_SIGNED_URL_SECONDS } from './signing.js';

export type RouteAuth = 'bearer' | 'basic' | 'signature' | 'none';
type Method = 'GET' | 'HEAD' | 'PUT' | 'POST' | 'DELETE';

export interface Parameter {
  description: string;
  required?: boolean;
  /** Default `{ type: 'string' }`. */
  schema?: JsonSchema;
}

/** A status a route answers. A bare string is its meaning; an error (4xx, 5xx) then has the `Error` body. */
export interface Answer {
  description: string;
  /** By media type; `{}` for any content. Errors get `Error` when they name none. */
  content?: Record<string, { schema?: JsonSchema }>;
  /** Response headers (in `components.headers`) besides those every answer of this status carries. */
  headers?: string[];
}

export interface RouteSpec {
  method: Method;
  path: string;
  summary: string;
  description?: string;
  auth: RouteAuth;
  /** The query parameters the route reads (a test checks they are exactly the ones read). */
  query?: Record<string, string | Parameter>;
  /** The request headers that change what the route does. */
  headers?: Record<string, string | Parameter>;
  body?: { description: string; required: boolean; content: Record<string, { schema?: JsonSchema }> };
  /** Every status the route answers, besides the 401 or 403 of its `auth` and a 500. */
  responses: Record<number, string | Answer>;
  /** The board is an app of its own: a method it does not take is 404 there, not 405. */
  refusesOtherMethods?: false;
}

// ---- what routes share ----

const OBJECT = '/v1/stores/{store}/objects/{key}';
const SIGNED = '/v1/signed/{store}/{key}';
const ENCODED_TEXT = "raw UTF-8 or `utf-8''<percent-encoded>` (RFC 8187); bytes that are not UTF-8 are 400";

const flag = (meaning: string): Parameter => ({
  description: `${meaning}. \`true\` or \`false\` (default); any other value is 400`,
  schema: { type: 'boolean', default: false },
});
const PAGE = {
  cursor: 'From the previous page’s `cursor`',
  limit: { description: 'Items per page (default 1000)', schema: { type: 'integer', minimum: 1, maximum: 1000 } },
};
const WAIT = { wait: flag('`true`: answer 200 with the job’s outcome once it completed (still 202 if it takes longer than WAIT_TIMEOUT_MS)') };
const JOB_HEADERS = {
  'Idempotency-Key': {
    description: 'A request repeated with the same key (the same route and payload, a body by its content) is answered with the same job. 1..256 characters, checked before the body is read (400 otherwise)',
    schema: { type: 'string', minLength: 1, maxLength: 256 },
  },
};
const DIGEST = 'RFC 9530 `sha-256=:<base64>:` of the body (or, for a copy, of its source): checked against what arrived (400 BAD_DIGEST, nothing stored, if it differs); also read as a trailer after a chunked body (announced in `Trailer` but missing: 400); another algorithm alone, or a malformed one, is 400';
const WRITE_HEADERS = {
  ...JOB_HEADERS,
  'Content-Digest': DIGEST,
  'Repr-Digest': `${DIGEST} (the same bytes: the body is stored as sent)`,
  'If-Match': 'Quoted etags (or bare, as copied from JSON; strong comparison) or `*`: the job fails with 412 unless the current object has one; a malformed one (a stray quote, a space) is 400',
  'If-None-Match': { description: '`*` only (create-only): the job fails with 412 if an object exists; any other value is 501', schema: { enum: ['*'] } },
};
const VERSION_HEADERS = {
  'X-Version-Message': `The version’s message, ${ENCODED_TEXT}`,
  'X-Author': `\`Name <email>\` or \`Name\`, ${ENCODED_TEXT}; any other form is 400`,
};
const CONDITIONAL_HEADERS = {
  'If-Match': 'Quoted etags (or bare; strong comparison) or `*`: 412 unless the object has one; a malformed one is 400',
  'If-Unmodified-Since': 'Without If-Match: 412 if the object changed after this HTTP-date',
  'If-None-Match': 'Etags (weak comparison) or `*`: 304 if the object has one',
  'If-Modified-Since': 'Without If-None-Match: 304 unless the object changed after this HTTP-date',
};
const READ_HEADERS = {
  ...CONDITIONAL_HEADERS,
  Range: 'One `bytes` range: 206, or 416 if malformed or outside. Several ranges or another unit: the whole object (200)',
  'If-Range': 'The current etag, for Range to apply; anything else gets the whole object',
};
const SIGNATURE = {
  method: { description: 'The method the URL was signed for (`GET` also serves HEAD)', required: true, schema: { enum: ['GET', 'PUT'] } },
  expires: { description: 'When the URL expires, Unix seconds', required: true, schema: { type: 'integer' } },
  signature: { description: 'The URL’s signature', required: true },
};

const META_IN =
  `Metadata: one \`X-Meta-<name>\` header per entry (OpenAPI cannot declare a family of headers). Names are letters, ` +
  `digits, \`-\` and \`_\`, lower-cased; names and values ${MAX_METADATA_BYTES} bytes at most in all (400 otherwise). ` +
  `A value is ${ENCODED_TEXT}.`;
const META_OUT = "Its metadata comes as one `X-Meta-<name>` header per entry; a value outside printable ASCII, or with spaces at an end, as `utf-8''<percent-encoded>` (RFC 8187).";
const CONTENT_BODY: NonNullable<RouteSpec['body']> = {
  description:
    'The content, stored as sent; its Content-Type (any media type) is stored as the object’s content type (default application/octet-stream). ' +
    'At most MAX_OBJECT_BYTES; no body stores an empty object.',
  required: false,
  content: { '*/*': {} },
};

const OBJECT_HEADERS = ['ETag', 'Repr-Digest', 'Last-Modified', 'Cache-Control', 'Accept-Ranges', 'X-Kyozo-Version', 'X-Kyozo-Tier'];

const STORE_ERRORS = {
  403: 'PERMISSION_DENIED: the store’s backend refused',
  503: 'PROVIDER_UNAVAILABLE: the store cannot be reached now',
};
function readAnswers(notFound: string): Record<number, string | Answer> {
  return {
    200: { description: `The content, with its Content-Type. ${META_OUT}`, content: { '*/*': {} }, headers: OBJECT_HEADERS },
    304: { description: 'Not modified (If-None-Match, If-Modified-Since): the same headers, no body', headers: OBJECT_HEADERS },
    400: 'INVALID_KEY: not a valid key; BAD_REQUEST: a malformed If-Match',
    404: notFound,
    412: 'PRECONDITION_FAILED: If-Match or If-Unmodified-Since does not hold',
    ...STORE_ERRORS,
  };
}
const OBJECT_READ = readAnswers('NOT_FOUND: no such store, object or version');
const SIGNED_READ = readAnswers('NOT_FOUND: no such store or object');
const RANGE_ANSWERS = {
  206: { description: 'The one bytes range asked for', content: { '*/*': {} }, headers: [...OBJECT_HEADERS, 'Content-Range'] },
  416: 'RANGE_NOT_SATISFIABLE: a malformed range, or none inside the object',
};

/**
 * What a mutation answers: 202 with its job, or under `?wait=true` its result once done, or the job's failure with
 * its code's status. The queue down is 503 before anything is enqueued.
 */
function mutationAnswers(result: JsonSchema, failures: Record<number, string | Answer>): Record<number, string | Answer> {
  return {
    200: { description: 'Under ?wait=true: the job completed; its result', content: json(result) },
    202: { description: 'Accepted as a job (and under ?wait=true when it takes longer than WAIT_TIMEOUT_MS)', content: json(ref('JobAccepted')) },
    ...failures,
    503: 'SERVICE_UNAVAILABLE: the job queue (Redis) cannot be reached, nothing was enqueued; or, under ?wait=true, the job failed in a way a retry may fix (the same request again with its Idempotency-Key runs that job again)',
  };
}

const BAD_MUTATION = 'BAD_REQUEST, INVALID_KEY or INVALID_ARGUMENT: a bad key, ?wait, Idempotency-Key, header or metadata (nothing is read or enqueued)';
const BODY_FAILURES = {
  408: 'REQUEST_TIMEOUT: the body sent nothing for 30 s; nothing was stored',
  413: 'PAYLOAD_TOO_LARGE: the body is over MAX_OBJECT_BYTES (at once when Content-Length says so)',
  415: { description: 'UNSUPPORTED_MEDIA_TYPE: a Content-Encoding other than identity', headers: ['Accept-Encoding'] },
};
const WAITED_STORE_FAILURES = {
  403: 'PERMISSION_DENIED (under ?wait=true): the store’s backend refused',
  507: 'STORAGE_FULL (under ?wait=true): the store is full',
};
const WRITE_FAILURES = {
  400: `${BAD_MUTATION}; BAD_DIGEST: the body does not match its Content-Digest or Repr-Digest (read, then released: nothing enqueued)`,
  404: 'NOT_FOUND: no such store',
  ...BODY_FAILURES,
  412: 'PRECONDITION_FAILED (under ?wait=true): If-Match or If-None-Match: * did not hold',
  501: 'NOT_SUPPORTED: If-Unmodified-Since, or If-None-Match other than `*`',
  ...WAITED_STORE_FAILURES,
};
const REFUSED_CONDITIONS = 'NOT_SUPPORTED: If-Match, If-None-Match and If-Unmodified-Since are refused, never ignored';

const MAINTENANCE_FIELDS: Record<string, string> = {
  store: 'A store name (must exist: 404 otherwise)',
  target: 'The store backed up into (default BACKUP_STORE)',
  from: 'A store name (must exist: 404 otherwise); for restore-backup the store holding the backup (default BACKUP_STORE)',
  to: 'The store migrated into',
  versions: 'Copy version histories too',
  verify: '`copied` (default): verify the blobs new in this run; `all`: every blob the manifest needs',
  manifest: 'A manifest key as a backup’s result names it: `backups/<store>/manifests/<id>.json`',
};

type MaintenanceTask = (typeof MAINTENANCE_TASKS)[number];

/** The job's own zod schema, as the JSON Schema of the request body (what the route checks it against). */
function maintenanceBodySchema(task: MaintenanceTask): JsonSchema {
  const schema = z.toJSONSchema(jobs[task].schema, { io: 'input' }) as JsonSchema;
  delete schema.$schema; // OpenAPI 3.1's own dialect is the same JSON Schema 2020-12
  const properties = (schema.properties ?? {}) as Record<string, JsonSchema>;
  for (const [name, property] of Object.entries(properties)) {
    const meaning = MAINTENANCE_FIELDS[name];
    if (meaning !== undefined) properties[name] = { ...property, description: meaning };
  }
  return schema;
}

function maintenance(task: MaintenanceTask, summary: string, failures: Record<number, string> = {}): RouteSpec {
  const schema = maintenanceBodySchema(task);
  return {
    method: 'POST',
    path: `/v1/maintenance/${task}`,
    summary,
    auth: 'bearer',
    query: WAIT,
    headers: JOB_HEADERS,
    body: {
      description:
        'JSON sent as `Content-Type: application/json`, at most 64 KiB (an empty body, without a Content-Type, is `{}`), checked against the job’s schema and checks before it is enqueued',
      required: Array.isArray(schema.required) && schema.required.length > 0,
      content: json(schema),
    },
    responses: {
      ...mutationAnswers(ref('MaintenanceOutcome'), {
        400: 'BAD_REQUEST or INVALID_ARGUMENT: ?wait, Idempotency-Key, or a body that is not a JSON object or that the job could never run (nothing is enqueued)',
        404: 'NOT_FOUND: a store the body names does not exist',
        408: 'REQUEST_TIMEOUT: the body sent nothing for 30 s; nothing was enqueued',
        413: 'PAYLOAD_TOO_LARGE: the body is over 64 KiB',
        415: 'UNSUPPORTED_MEDIA_TYPE: a body not sent as application/json',
        ...WAITED_STORE_FAILURES,
        ...failures,
      }),
    },
  };
}

// ---- the routes ----

const routes: RouteSpec[] = [
  { method: 'GET', path: '/health', summary: 'The process answers', auth: 'none', responses: { 200: { description: 'Up', content: json(ref('Health')) } } },
  {
    method: 'GET',
    path: '/ready',
    summary: 'Redis takes writes and every store is up',
    description: 'Without a valid bearer token (when API_TOKENS is set), each part answers its `status` only; the details (paths, errors, latencies) need a token.',
    auth: 'none',
    responses: {
      200: { description: 'Ready (`status` `degraded` when a part reads but cannot write)', content: json(ref('Readiness')) },
      503: { description: 'Redis, the staging store or a store is down: the same report', content: json(ref('Readiness')) },
    },
  },
  { method: 'GET', path: '/metrics', summary: 'Prometheus metrics', auth: 'none', responses: { 200: { description: 'Prometheus text format', content: { 'text/plain': {} } } } },
  { method: 'GET', path: '/openapi.json', summary: 'This document', auth: 'none', responses: { 200: { description: 'OpenAPI 3.1', content: json({ type: 'object' }) } } },
  {
    method: 'GET',
    path: '/v1/stores',
    summary: 'Stores with their kind and capabilities',
    auth: 'bearer',
    responses: { 200: { description: 'The stores', content: json(ref('StoreList')) } },
  },
  {
    method: 'GET',
    path: '/v1/stores/{store}/stats',
    summary: 'Objects, bytes, versions and operation counters of a store',
    auth: 'bearer',
    responses: { 200: { description: 'The store’s figures', content: json(ref('StoreStats')) }, 404: 'NOT_FOUND: no such store', ...STORE_ERRORS },
  },
  ...['/v1/stores/{store}/objects', '/v1/stores/{store}/objects/'].map(
    (path): RouteSpec => ({
      method: 'GET',
      path,
      summary: 'List objects, in UTF-8 byte order of their keys',
      auth: 'bearer',
      query: {
        prefix: 'Only keys starting with this',
        delimiter: {
          description:
            'Group keys by this (1 to 64 characters; `/` lists one level of a tree): a key that holds it after the prefix is listed once as its common prefix, in `prefixes`, up to and including the first delimiter. Items and prefixes together are at most `limit`',
          schema: { type: 'string', minLength: 1, maxLength: 64 },
        },
        ...PAGE,
      },
      responses: {
        200: { description: 'A page of objects; with `delimiter`, also `prefixes`', content: json(ref('ObjectPage')) },
        400: 'BAD_REQUEST, INVALID_KEY or INVALID_ARGUMENT: a bad limit, prefix or cursor',
        404: 'NOT_FOUND: no such store',
        ...STORE_ERRORS,
      },
    }),
  ),
  ...['/v1/stores/{store}/objects', '/v1/stores/{store}/objects/'].map(
    (path): RouteSpec => ({
      method: 'DELETE',
      path,
      summary: 'Delete every object under a prefix (job); event objects.deleted with the count',
      description:
        'The job lists the store a page at a time and deletes each key, as a DELETE of it would; it saves its place after each page, so a retry or a run resumed after a shutdown goes on from there. An object written under the prefix while it runs is deleted when its key comes after the job’s place.',
      auth: 'bearer',
      query: {
        prefix: { description: 'Delete the objects whose keys start with this; required (a whole store is never deleted this way)', required: true },
        allVersions: flag('`true`: their recorded versions too'),
        ...WAIT,
      },
      headers: JOB_HEADERS,
      responses: mutationAnswers(ref('DeletePrefixResult'), {
        400: 'BAD_REQUEST, INVALID_KEY or INVALID_ARGUMENT: no prefix, or a bad prefix, ?wait, ?allVersions or Idempotency-Key',
        404: 'NOT_FOUND: no such store',
        403: WAITED_STORE_FAILURES[403],
        501: REFUSED_CONDITIONS,
      }),
    }),
  ),
  {
    method: 'GET',
    path: OBJECT,
    summary: 'Read an object',
    description: META_OUT,
    auth: 'bearer',
    query: { version: 'Read this version instead of the current object' },
    headers: READ_HEADERS,
    responses: { ...OBJECT_READ, ...RANGE_ANSWERS },
  },
  {
    method: 'HEAD',
    path: OBJECT,
    summary: 'An object’s headers (Range is ignored)',
    description: META_OUT,
    auth: 'bearer',
    query: { version: 'Read this version instead of the current object' },
    headers: CONDITIONAL_HEADERS,
    responses: OBJECT_READ,
  },
  {
    method: 'PUT',
    path: OBJECT,
    summary: 'Write an object, or copy one with X-Copy-Source (job)',
    description: `${META_IN} With \`X-Copy-Source\` the request has no body: the job copies that object (its etag, Content-Type and metadata as they are when the request is accepted; a Content-Type or any \`X-Meta-*\` of the request replaces the source’s). A source replaced or deleted before the job ran fails it with 412.`,
    auth: 'bearer',
    query: WAIT,
    headers: {
      ...WRITE_HEADERS,
      'X-Copy-Source': '`<store>/<key>`, the key written as in an object’s path (percent-encoded segments): copy that object; 404 if it does not exist, 400 with a body',
      'X-Copy-Source-Version': 'With X-Copy-Source: copy this version of it',
    },
    body: CONTENT_BODY,
    responses: mutationAnswers(ref('ObjectInfo'), WRITE_FAILURES),
  },
  {
    method: 'DELETE',
    path: OBJECT,
    summary: 'Delete an object (job); deleting a missing key succeeds',
    auth: 'bearer',
    query: { allVersions: flag('`true`: its recorded versions too'), ...WAIT },
    headers: JOB_HEADERS,
    responses: mutationAnswers(ref('DeleteResult'), {
      400: BAD_MUTATION,
      404: 'NOT_FOUND: no such store',
      403: WAITED_STORE_FAILURES[403],
      501: REFUSED_CONDITIONS,
    }),
  },
  {
    method: 'POST',
    path: `${OBJECT}/versions`,
    summary: 'Create a version (job)',
    description: META_IN,
    auth: 'bearer',
    query: WAIT,
    headers: { ...WRITE_HEADERS, ...VERSION_HEADERS },
    body: CONTENT_BODY,
    responses: mutationAnswers(ref('VersionInfo'), WRITE_FAILURES),
  },
  {
    method: 'GET',
    path: `${OBJECT}/versions`,
    summary: 'List versions, newest first',
    auth: 'bearer',
    query: PAGE,
    responses: {
      200: { description: 'A page of versions', content: json(ref('VersionPage')) },
      400: 'BAD_REQUEST, INVALID_KEY or INVALID_ARGUMENT: a bad key, limit or cursor',
      404: 'NOT_FOUND: no such store',
      ...STORE_ERRORS,
    },
  },
  {
    method: 'POST',
    path: `${OBJECT}/versions/{versionId}/restore`,
    summary: 'Restore a version (job): its content becomes current, as a new version',
    auth: 'bearer',
    query: WAIT,
    headers: { ...JOB_HEADERS, ...VERSION_HEADERS },
    responses: mutationAnswers(ref('RestoreResult'), {
      400: BAD_MUTATION,
      404: 'NOT_FOUND: no such store, or a version the store does not have (checked before enqueueing; a store that is down does not refuse)',
      501: REFUSED_CONDITIONS,
      ...WAITED_STORE_FAILURES,
    }),
  },
  {
    method: 'GET',
    path: `${OBJECT}/diff`,
    summary: 'Unified diff of an object between two versions (stores with diff: git)',
    auth: 'bearer',
    query: {
      from: { description: 'A version id of the object, or a branch name (`main`)', required: true, schema: { type: 'string', minLength: 1 } },
      to: { description: 'A version id or a branch name (default: the head of the store’s branch, the current object)', schema: { type: 'string', minLength: 1 } },
    },
    responses: {
      200: { description: 'The diff; sizes and etags for binary content', content: json(ref('Diff')) },
      400: 'BAD_REQUEST or INVALID_KEY: no `from`, or a bad key',
      404: 'NOT_FOUND: no such store, version or branch, or the key exists at neither side',
      413: 'PAYLOAD_TOO_LARGE: a side is over 16 MiB or 100,000 lines (a diff runs in the web process): read both versions and diff them locally',
      501: 'NOT_SUPPORTED: the store has no diff',
      ...STORE_ERRORS,
    },
  },
  {
    method: 'GET',
    path: `${OBJECT}/url`,
    summary: 'A presigned (S3) or signed URL for the object',
    auth: 'bearer',
    query: {
      method: { description: 'The method the URL is for', schema: { enum: ['GET', 'PUT'], default: 'GET' } },
      expires: { description: 'Seconds the URL is valid', schema: { type: 'integer', minimum: 1, maximum: MAX_SIGNED_URL_SECONDS, default: 3600 } },
    },
    responses: {
      200: { description: 'The URL, valid until expiresAt', content: json(ref('SignedUrl')) },
      400: 'BAD_REQUEST or INVALID_KEY: a bad method, expires or key',
      404: 'NOT_FOUND: no such store, or a GET URL for an object that does not exist (stores whose URLs this API signs; S3 checks when the URL is used)',
      501: 'NOT_SUPPORTED: a PUT URL of a hybrid store (uploads go through the API, so every tier and process hears of them)',
      ...STORE_ERRORS,
    },
  },
  {
    method: 'GET',
    path: SIGNED,
    summary: 'Read through a signed URL',
    description: META_OUT,
    auth: 'signature',
    query: SIGNATURE,
    headers: READ_HEADERS,
    responses: { ...SIGNED_READ, ...RANGE_ANSWERS },
  },
  {
    method: 'HEAD',
    path: SIGNED,
    summary: 'Headers through a signed GET URL (Range is ignored)',
    description: META_OUT,
    auth: 'signature',
    query: SIGNATURE,
    headers: CONDITIONAL_HEADERS,
    responses: SIGNED_READ,
  },
  {
    method: 'PUT',
    path: SIGNED,
    summary: 'Write through a signed PUT URL (job)',
    description: `${META_IN} The URL grants this write alone: the job’s statusUrl needs a bearer token.`,
    auth: 'signature',
    query: { ...SIGNATURE, ...WAIT },
    headers: WRITE_HEADERS,
    body: CONTENT_BODY,
    responses: mutationAnswers(ref('ObjectInfo'), WRITE_FAILURES),
  },
  maintenance('tier', 'Tier pass over hybrid stores (job)', {
    400: 'BAD_REQUEST or INVALID_ARGUMENT: ?wait, Idempotency-Key, a body that is not a JSON object, or a store that is not hybrid (nothing is enqueued)',
  }),
  maintenance('cleanup', 'Version retention, staging orphans, old jobs and events (job)'),
  maintenance('backup', 'Incremental verified backup with a manifest (job)', {
    412: 'PRECONDITION_FAILED (under ?wait=true): another backup of the store holds its lock',
  }),
  maintenance('restore-backup', 'Restore a store from a backup manifest, verified (job)', { 404: 'NOT_FOUND: a store the body names, or the manifest, does not exist' }),
  maintenance('migrate', 'Copy every object of a store into another, verified and resumable (job)'),
  {
    method: 'GET',
    path: '/v1/jobs/{id}',
    summary: 'A job’s state, attempts, progress, result or failure',
    auth: 'bearer',
    responses: {
      200: { description: 'The job', content: json(ref('JobStatus')) },
      404: 'NOT_FOUND: no such job (finished jobs are kept for COMPLETED_JOBS_KEEP_SECONDS, the newest COMPLETED_JOBS_KEEP_COUNT; failed ones as FAILED_JOBS_KEEP_*)',
      503: 'SERVICE_UNAVAILABLE: the job queue (Redis) cannot be reached',
    },
  },
  {
    method: 'GET',
    path: '/v1/events',
    summary: 'Server-Sent Events',
    description:
      'Each event is `id: <event id>`, `event: <type>`, `data: <EventEnvelope as JSON>`; comment lines keep the connection alive. ' +
      'With ?types=, a heartbeat may carry `id: <event id>` and no data: the newest event of other types passed, to resume from. ' +
      'An `event: gap` comes first when the resume point is before the stream\'s oldest event, or the stream has none (other than 0 on a stream ' +
      'nothing was trimmed from): events after it may be gone (trimmed past EVENTS_MAXLEN, or the stream lost). ' +
      'When no stream can be served now, a request accepting text/event-stream gets 200 with `retry:` (5 to 10 s) and an empty stream ' +
      '(an EventSource gives up for good on any other status); other clients get 503.',
    auth: 'bearer',
    query: {
      types: `Comma-separated event types (default all): ${EVENT_TYPES.join(', ')}; repeated, all its values count; an unknown one is 400`,
      since: {
        description: 'Replay what came after this event id, exclusive (as Last-Event-ID, which wins); milliseconds alone mean `<ms>-0`; empty: none; not an event id: 400',
        schema: { type: 'string', pattern: '^(\\d+(-\\d+)?)?$' },
      },
    },
    headers: {
      'Last-Event-ID': { description: 'Resume after this event id (an EventSource reconnecting); empty: none', schema: { type: 'string', pattern: '^(\\d+(-\\d+)?)?$' } },
    },
    responses: {
      200: { description: 'The event stream', content: { 'text/event-stream': { schema: { type: 'string' } } }, headers: ['Cache-Control'] },
      400: 'BAD_REQUEST: an unknown event type, or a ?since or Last-Event-ID that is not an event id',
      503: 'SERVICE_UNAVAILABLE: the event stream (Redis) cannot be reached, or this process already serves its most streams at once (1,000); Retry-After',
    },
  },
  {
    method: 'POST',
    path: '/v1/webhooks/redeliver',
    summary: 'Send again every webhook delivery whose attempts all failed',
    description:
      'Each failed delivery of every URL of this process\'s WEBHOOK_URLS (kept 7 days, the newest 10,000 per URL) goes back to its queue with ' +
      'its attempts counted afresh; worker processes send it. A receiver gets it as first sent (the same body and X-Kyozo-Event-Id). A delivery ' +
      'refused as forged stays failed. Takes no body: one that comes must be declared application/json (its content is not read).',
    auth: 'bearer',
    responses: {
      200: { description: 'How many went back, in all and per URL', content: json(ref('Redelivered')) },
      415: 'UNSUPPORTED_MEDIA_TYPE: a body not sent as application/json',
      503: 'SERVICE_UNAVAILABLE: the delivery queues (Redis) cannot be reached',
    },
  },
  {
    method: 'GET',
    path: '/admin/queues',
    summary: 'Bull Board (HTTP basic auth: any user, an API token as password)',
    auth: 'basic',
    responses: { 200: { description: 'The board', content: { 'text/html': {} } } },
    refusesOtherMethods: false,
  },
];

/** Hono answers HEAD with every GET route, dropping the body: documented beside each GET that has no HEAD of its own. */
function withHeads(table: readonly RouteSpec[]): RouteSpec[] {
  const explicit = new Set(table.filter((route) => route.method === 'HEAD').map((route) => route.path));
  return table.flatMap((route) =>
    route.method === 'GET' && !explicit.has(route.path) ? [route, { ...route, method: 'HEAD' as const, summary: `${route.summary} (headers only)` }] : [route],
  );
}

export const routeTable: RouteSpec[] = withHeads(routes);

// ---- the document ----

const PARAMETER_MEANING: Record<string, string> = {
  store: 'A store name',
  key: 'Object key; its slashes stay slashes, other reserved characters percent-encoded. A key ending in `versions`, `diff`, `url` or `restore` has its last slash encoded (`notes%2Fversions`)',
  versionId: 'A version id of the object',
  id: 'A job id, as `jobId` and `statusUrl` name it',
};

function describedParameters(where: 'query' | 'header', described: Record<string, string | Parameter> = {}): Record<string, unknown>[] {
  return Object.entries(described).map(([name, parameter]) => {
    const { description, required = false, schema = STRING } = typeof parameter === 'string' ? { description: parameter } : parameter;
    return { name, in: where, required, schema, description };
  });
}

/** What the request gate (`gate.ts`) refuses on every route, before its own checks. */
const GATE_REFUSAL = 'FORBIDDEN: without API_TOKENS, a Host that is not loopback';
const CROSS_SITE_REFUSAL = 'FORBIDDEN: a browser request from another site that would change something (Origin, Sec-Fetch-Site)';

const authAnswers: Record<RouteAuth, Record<number, string>> = {
  bearer: { 401: 'UNAUTHORIZED: no valid bearer token (Authorization: Bearer <token>)', 403: `${CROSS_SITE_REFUSAL}; ${GATE_REFUSAL}` },
  basic: { 401: 'UNAUTHORIZED: no valid basic credentials (any user, an API token as password)', 403: `${CROSS_SITE_REFUSAL}; ${GATE_REFUSAL}` },
  signature: { 403: `FORBIDDEN: the signature is missing, tampered with or expired, or the URL was signed for another method or key; ${GATE_REFUSAL}` },
  none: { 403: GATE_REFUSAL },
};

function response(status: number, answer: string | Answer, method: Method): Record<string, unknown> {
  const { description, content, headers: own = [] } = typeof answer === 'string' ? { description: answer } : answer;
  const body = content ?? (status >= 400 ? json(ref('Error')) : undefined);
  const headers = [...new Set([...own, ...(statusHeaders[status] ?? [])])];
  return {
    description,
    ...(headers.length > 0 ? { headers: Object.fromEntries(headers.map((name) => [name, { $ref: `#/components/headers/${name}` }])) } : {}),
    // A HEAD answer never has a body, errors included.
    ...(body && method !== 'HEAD' ? { content: body } : {}),
  };
}

function responses(route: RouteSpec): Record<string, unknown> {
  const answers: Record<number, string | Answer> = { ...route.responses };
  for (const [status, meaning] of Object.entries(authAnswers[route.auth])) {
    const own = answers[Number(status)];
    // A signed route's 403 is also its store's PERMISSION_DENIED.
    answers[Number(status)] = own === undefined ? meaning : `${meaning}; or ${typeof own === 'string' ? own : own.description}`;
  }
  const entries = Object.entries(answers).sort(([a], [b]) => Number(a) - Number(b));
  return {
    ...Object.fromEntries(entries.map(([status, answer]) => [status, response(Number(status), answer, route.method)])),
    default: response(500, 'INTERNAL: a failure outside the contract; DATA_CORRUPTED: what the store holds is damaged (disk)', route.method),
  };
}

/**
 * `refusal`: what the path answers a method it has no route for. Said on each operation rather than on the path item,
 * where Swagger UI does not show it and tools that read a path item as a map of methods would trip on it.
 */
function operation(route: RouteSpec, refusal: string | undefined): Record<string, unknown> {
  const pathParameters = [...route.path.matchAll(/\{(\w+)\}/g)].map((match) => ({
    name: match[1],
    in: 'path',
    required: true,
    schema: STRING,
    description: PARAMETER_MEANING[match[1]!],
  }));
  const description = [route.description, refusal].filter((part) => part !== undefined).join(' ');
  return {
    summary: route.summary,
    ...(description === '' ? {} : { description }),
    parameters: [...pathParameters, ...describedParameters('query', route.query), ...describedParameters('header', route.headers)],
    ...(route.body === undefined ? {} : { requestBody: route.body }),
    responses: responses(route),
    security: route.auth === 'bearer' ? [{ bearer: [] }] : route.auth === 'basic' ? [{ basic: [] }] : [],
  };
}

const METHOD_ORDER: Method[] = ['GET', 'HEAD', 'PUT', 'POST', 'DELETE'];

export function openApiDocument(table: readonly RouteSpec[] = routeTable): Record<string, unknown> {
  const byPath = new Map<string, RouteSpec[]>();
  for (const route of table) byPath.set(route.path, [...(byPath.get(route.path) ?? []), route]);
  const paths: Record<string, Record<string, unknown>> = {};
  for (const [path, pathRoutes] of byPath) {
    const allow = METHOD_ORDER.filter((method) => pathRoutes.some((route) => route.method === method)).join(', ');
    const refuses = pathRoutes.every((route) => route.refusesOtherMethods !== false);
    const refusal = refuses ? `Any other method on this path: 405 METHOD_NOT_ALLOWED, with Allow: ${allow}.` : undefined;
    paths[path] = Object.fromEntries(pathRoutes.map((route) => [route.method.toLowerCase(), operation(route, refusal)]));
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'Kyozo Storage',
      version: '1',
      description:
        'Errors are JSON `{ "error": { "code", "message" } }` (the Error schema). Mutations are jobs: 202 `{ jobId, statusUrl }` with Location, ' +
        'or under ?wait=true the job’s result. Every answer carries X-Request-Id (the client’s when it sends a plausible one). ' +
        'CORS: a preflight (OPTIONS with Access-Control-Request-Method) from an origin in CORS_ORIGINS, or to a signed URL from any origin, ' +
        'is answered 204 without a token; the answers to such origins carry Access-Control-Allow-Origin and Access-Control-Expose-Headers: *.',
    },
    components: {
      schemas,
      headers: headerSchemas,
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' }, basic: { type: 'http', scheme: 'basic' } },
    },
    paths,
  };
}
