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
  /** Status codes a client should expect besides errors. */
  ok: number[];
}

const OBJECT = '/v1/stores/{store}/objects/{key}';

export const routeTable: RouteSpec[] = [
  { method: 'GET', path: '/health', summary: 'The process answers', auth: 'none', ok: [200] },
  { method: 'GET', path: '/ready', summary: 'Redis and every store are up (503 otherwise)', auth: 'none', ok: [200] },
  { method: 'GET', path: '/metrics', summary: 'Prometheus metrics', auth: 'none', ok: [200] },
  { method: 'GET', path: '/openapi.json', summary: 'This document', auth: 'none', ok: [200] },
  { method: 'GET', path: '/v1/stores', summary: 'Stores with their kind and capabilities', auth: 'bearer', ok: [200] },
  { method: 'GET', path: '/v1/stores/{store}/stats', summary: 'Objects, bytes, versions and operation counters of a store', auth: 'bearer', ok: [200] },
  { method: 'GET', path: '/v1/stores/{store}/objects', summary: 'List objects (?prefix, ?cursor, ?limit ≤ 1000)', auth: 'bearer', ok: [200] },
  { method: 'GET', path: OBJECT, summary: 'Read an object (?version; If-None-Match, Range)', auth: 'bearer', ok: [200, 206, 304] },
  { method: 'HEAD', path: OBJECT, summary: 'An object’s headers', auth: 'bearer', ok: [200, 304] },
  { method: 'PUT', path: OBJECT, summary: 'Write an object (job; Content-Type, X-Meta-*, If-Match, Idempotency-Key, ?wait=true)', auth: 'bearer', ok: [200, 202] },
  { method: 'DELETE', path: OBJECT, summary: 'Delete an object (job; ?allVersions=true)', auth: 'bearer', ok: [200, 202] },
  { method: 'POST', path: `${OBJECT}/versions`, summary: 'Create a version (job; X-Version-Message, X-Author, If-Match)', auth: 'bearer', ok: [200, 202] },
  { method: 'GET', path: `${OBJECT}/versions`, summary: 'List versions, newest first', auth: 'bearer', ok: [200] },
  { method: 'POST', path: `${OBJECT}/versions/{versionId}/restore`, summary: 'Restore a version (job)', auth: 'bearer', ok: [200, 202] },
  { method: 'GET', path: `${OBJECT}/diff`, summary: 'Unified diff between versions (?from, ?to; stores with diff)', auth: 'bearer', ok: [200] },
  { method: 'GET', path: `${OBJECT}/url`, summary: 'A presigned or signed URL (?method=GET|PUT, ?expires seconds)', auth: 'bearer', ok: [200] },
  { method: 'GET', path: '/v1/signed/{store}/{key}', summary: 'Read through a signed URL', auth: 'signature', ok: [200, 206, 304] },
  { method: 'PUT', path: '/v1/signed/{store}/{key}', summary: 'Write through a signed URL (job)', auth: 'signature', ok: [202] },
  { method: 'POST', path: '/v1/maintenance/tier', summary: 'Tier pass over hybrid stores (job; body { store? }, ?wait=true)', auth: 'bearer', ok: [200, 202] },
  { method: 'POST', path: '/v1/maintenance/cleanup', summary: 'Version retention, staging orphans, old jobs and events (job; body { store? })', auth: 'bearer', ok: [200, 202] },
  { method: 'POST', path: '/v1/maintenance/backup', summary: 'Incremental verified backup with a manifest (job; body { store, target?, versions?, verify? })', auth: 'bearer', ok: [200, 202] },
  { method: 'POST', path: '/v1/maintenance/restore-backup', summary: 'Restore a store from a backup manifest, verified (job; body { manifest, store, from? })', auth: 'bearer', ok: [200, 202] },
  { method: 'POST', path: '/v1/maintenance/migrate', summary: 'Copy every object of a store into another, verified and resumable (job; body { from, to, versions? })', auth: 'bearer', ok: [200, 202] },
  { method: 'GET', path: '/v1/jobs/{id}', summary: 'A job’s state, attempts, progress, result or failure', auth: 'bearer', ok: [200] },
  { method: 'GET', path: '/v1/events', summary: 'Server-Sent Events (?types=a,b; Last-Event-ID resumes)', auth: 'bearer', ok: [200] },
  { method: 'GET', path: '/admin/queues', summary: 'Bull Board (HTTP basic auth: any user, an API token as password)', auth: 'basic', ok: [200] },
];

export function openApiDocument(routes: readonly RouteSpec[] = routeTable): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of routes) {
    const parameters = [...route.path.matchAll(/\{(\w+)\}/g)].map((match) => ({
      name: match[1],
      in: 'path',
      required: true,
      schema: { type: 'string' },
      ...(match[1] === 'key' ? { description: 'Object key; its slashes stay slashes, other reserved characters percent-encoded' } : {}),
    }));
    const responses: Record<string, unknown> = Object.fromEntries(route.ok.map((status) => [String(status), { description: 'OK' }]));
    responses.default = { description: 'Error: { "error": { "code", "message" } }' };
    if (route.auth !== 'none') responses['401'] = { description: 'Missing or invalid credentials' };
    (paths[route.path] ??= {})[route.method.toLowerCase()] = {
      summary: route.summary,
      parameters,
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
