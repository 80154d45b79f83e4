/**
 * The route table: every route the API serves, with its method, OpenAPI path, what it does and how it is
 * authenticated. `/openapi.json` is generated from it, and the API tests check that every route Hono has is in
 * it (so a new route cannot go undocumented, nor escape the 401 tests that are generated from it).
 */
export type RouteAuth = 'bearer' | 'basic' | 'signature' | 'none';

export interface RouteSpec {
  method: 'GET' | 'HEAD' | 'PUT' | 'POST' | 'DELETE';
  path: string;
  summary: string;
  auth: RouteAuth;
  /** The query parameters the route reads, with their meaning (a test checks they are exactly the ones read). */
  query?: Record<string, string>;
  /** The request headers that change what the route does, with their meaning. */
  headers?: Record<string, string>;
  /** Status codes a client should expect besides errors, and the 412 and 416 a read's own headers ask for. */
  ok: number[];
}

const OBJECT = '/v1/stores/{store}/objects/{key}';

const statusMeaning: Record<number, string> = {
  200: 'OK',
  202: 'Accepted as a job: { jobId, statusUrl }, with Location',
  206: 'One bytes range, with Content-Range',
  304: 'Not modified: the validators, no body',
  412: 'A precondition (If-Match, If-None-Match, If-Unmodified-Since) does not hold',
  416: 'No satisfiable or well-formed bytes range; Content-Range: bytes */<size>',
};

const PAGE = { cursor: 'Where the previous page ended', limit: 'Items per page, 1..1000' };
const WAIT = { wait: '`true`: 200 with the outcome once the job completed (still 202 if it takes longer than WAIT_TIMEOUT_MS)' };
const JOB_HEADERS = { 'Idempotency-Key': 'A repeated request with the same key is the same job (1..256 characters)' };
const WRITE_HEADERS = {
  ...JOB_HEADERS,
  'Content-Type': 'Stored with the object (X-Meta-<name> headers are its metadata)',
  'If-Match': 'Etags (strong comparison) or `*`: the job fails with 412 unless the current object has one',
  'If-None-Match': '`*` only (create-only): the job fails with 412 if an object exists',
};
const VERSION_HEADERS = { 'X-Version-Message': 'The version message', 'X-Author': '`Name <email>` or `Name`' };
const CONDITIONAL_HEADERS = {
  'If-Match': 'Etags (strong comparison) or `*`: 412 unless the object has one',
  'If-Unmodified-Since': 'Without If-Match: 412 if the object changed after this HTTP-date',
  'If-None-Match': 'Etags (weak comparison) or `*`: 304 if the object has one',
  'If-Modified-Since': 'Without If-None-Match: 304 unless the object changed after this HTTP-date',
};
const READ_HEADERS = {
  ...CONDITIONAL_HEADERS,
  Range: 'One `bytes` range: 206, or 416 if outside. Several ranges or another unit: the whole object (200)',
  'If-Range': 'The current etag, for Range to apply; anything else gets the whole object',
};
const SIGNATURE = { method: 'The signed method', expires: 'When the URL expires, Unix seconds', signature: 'The URL’s signature' };
const VERSION = { version: 'Read this version instead of the current object' };

function maintenance(task: string, summary: string): RouteSpec {
  return { method: 'POST', path: `/v1/maintenance/${task}`, summary, auth: 'bearer', query: WAIT, headers: JOB_HEADERS, ok: [200, 202] };
}

export const routeTable: RouteSpec[] = [
  { method: 'GET', path: '/health', summary: 'The process answers', auth: 'none', ok: [200] },
  { method: 'GET', path: '/ready', summary: 'Redis and every store are up (503 otherwise)', auth: 'none', ok: [200] },
  { method: 'GET', path: '/metrics', summary: 'Prometheus metrics', auth: 'none', ok: [200] },
  { method: 'GET', path: '/openapi.json', summary: 'This document', auth: 'none', ok: [200] },
  { method: 'GET', path: '/v1/stores', summary: 'Stores with their kind and capabilities', auth: 'bearer', ok: [200] },
  { method: 'GET', path: '/v1/stores/{store}/stats', summary: 'Objects, bytes, versions and operation counters of a store', auth: 'bearer', ok: [200] },
  {
    method: 'GET',
    path: '/v1/stores/{store}/objects',
    summary: 'List objects',
    auth: 'bearer',
    query: { prefix: 'Only keys starting with this', ...PAGE },
    ok: [200],
  },
  { method: 'GET', path: OBJECT, summary: 'Read an object', auth: 'bearer', query: VERSION, headers: READ_HEADERS, ok: [200, 206, 304, 412, 416] },
  { method: 'HEAD', path: OBJECT, summary: 'An object’s headers', auth: 'bearer', query: VERSION, headers: CONDITIONAL_HEADERS, ok: [200, 304, 412] },
  { method: 'PUT', path: OBJECT, summary: 'Write an object (job)', auth: 'bearer', query: WAIT, headers: WRITE_HEADERS, ok: [200, 202] },
  {
    method: 'DELETE',
    path: OBJECT,
    summary: 'Delete an object (job)',
    auth: 'bearer',
    query: { allVersions: '`true`: its versions too', ...WAIT },
    headers: JOB_HEADERS,
    ok: [200, 202],
  },
  {
    method: 'POST',
    path: `${OBJECT}/versions`,
    summary: 'Create a version (job)',
    auth: 'bearer',
    query: WAIT,
    headers: { ...WRITE_HEADERS, ...VERSION_HEADERS },
    ok: [200, 202],
  },
  { method: 'GET', path: `${OBJECT}/versions`, summary: 'List versions, newest first', auth: 'bearer', query: PAGE, ok: [200] },
  {
    method: 'POST',
    path: `${OBJECT}/versions/{versionId}/restore`,
    summary: 'Restore a version (job)',
    auth: 'bearer',
    query: WAIT,
    headers: { ...JOB_HEADERS, ...VERSION_HEADERS },
    ok: [200, 202],
  },
  {
    method: 'GET',
    path: `${OBJECT}/diff`,
    summary: 'Unified diff between versions (stores with diff)',
    auth: 'bearer',
    query: { from: 'A version id', to: 'A version id (default: the current object)' },
    ok: [200],
  },
  {
    method: 'GET',
    path: `${OBJECT}/url`,
    summary: 'A presigned or signed URL',
    auth: 'bearer',
    query: { method: '`GET` (default) or `PUT`', expires: 'Seconds the URL is valid, 1..604800 (default 3600)' },
    ok: [200],
  },
  { method: 'GET', path: '/v1/signed/{store}/{key}', summary: 'Read through a signed URL', auth: 'signature', query: SIGNATURE, headers: READ_HEADERS, ok: [200, 206, 304, 412, 416] },
  { method: 'HEAD', path: '/v1/signed/{store}/{key}', summary: 'Headers through a signed GET URL', auth: 'signature', query: SIGNATURE, headers: CONDITIONAL_HEADERS, ok: [200, 304, 412] },
  {
    method: 'PUT',
    path: '/v1/signed/{store}/{key}',
    summary: 'Write through a signed URL (job)',
    auth: 'signature',
    query: { ...SIGNATURE, ...WAIT },
    headers: WRITE_HEADERS,
    ok: [200, 202],
  },
  maintenance('tier', 'Tier pass over hybrid stores (job; body { store? })'),
  maintenance('cleanup', 'Version retention, staging orphans, old jobs and events (job; body { store? })'),
  maintenance('backup', 'Incremental verified backup with a manifest (job; body { store, target?, versions?, verify? })'),
  maintenance('restore-backup', 'Restore a store from a backup manifest, verified (job; body { manifest, store, from? })'),
  maintenance('migrate', 'Copy every object of a store into another, verified and resumable (job; body { from, to, versions? })'),
  { method: 'GET', path: '/v1/jobs/{id}', summary: 'A job’s state, attempts, progress, result or failure', auth: 'bearer', ok: [200] },
  {
    method: 'GET',
    path: '/v1/events',
    summary: 'Server-Sent Events',
    auth: 'bearer',
    query: { types: 'Comma-separated event types (default all)', since: 'Replay after this event id (as Last-Event-ID)' },
    headers: { 'Last-Event-ID': 'Resume after this event id' },
    ok: [200],
  },
  { method: 'GET', path: '/admin/queues', summary: 'Bull Board (HTTP basic auth: any user, an API token as password)', auth: 'basic', ok: [200] },
];

function statusDescription(route: RouteSpec, status: number): string | undefined {
  return status === 200 && route.query?.wait !== undefined ? 'The job’s outcome, under ?wait=true' : statusMeaning[status];
}

function describedParameters(where: 'query' | 'header', described: Record<string, string> = {}): Record<string, unknown>[] {
  return Object.entries(described).map(([name, description]) => ({ name, in: where, required: false, schema: { type: 'string' }, description }));
}

export function openApiDocument(routes: readonly RouteSpec[] = routeTable): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of routes) {
    const pathParameters = [...route.path.matchAll(/\{(\w+)\}/g)].map((match) => ({
      name: match[1],
      in: 'path',
      required: true,
      schema: { type: 'string' },
      ...(match[1] === 'key' ? { description: 'Object key; its slashes stay slashes, other reserved characters percent-encoded' } : {}),
    }));
    const responses: Record<string, unknown> = Object.fromEntries(route.ok.map((status) => [String(status), { description: statusDescription(route, status) }]));
    responses.default = { description: 'Error: { "error": { "code", "message" } }' };
    if (route.auth !== 'none') responses['401'] = { description: 'Missing or invalid credentials' };
    (paths[route.path] ??= {})[route.method.toLowerCase()] = {
      summary: route.summary,
      parameters: [...pathParameters, ...describedParameters('query', route.query), ...describedParameters('header', route.headers)],
      responses,
      security: route.auth === 'bearer' ? [{ bearer: [] }] : route.auth === 'basic' ? [{ basic: [] }] : [],
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Kyozo Storage', version: '1' },
    components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' }, basic: { type: 'http', scheme: 'basic' } } },
    paths,
  };
}
