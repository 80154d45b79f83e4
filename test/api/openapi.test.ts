/**
 * `/openapi.json` against what the routes do: every route of the table is called while the query parameters its
 * handler reads are recorded, and those must be exactly the ones the document lists for it.
 */
import { HonoRequest } from 'hono/request';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { routeTable, type RouteSpec } from '../../src/api/openapi.js';
import { startTestService, type TestService } from '../support/service.js';

let service: TestService;
let read = new Set<string>();
let versionId = '';

beforeAll(async () => {
  // A git store has diff, whose route reads its query only once the store can diff; no worker: jobs only queue.
  service = await startTestService('api-openapi', { STORES: 'files:disk,mem:ram,repo:git' }, { worker: false });
  // The restore-backup route answers 404 for a manifest its backup store does not hold, before it reads `wait`.
  await service.deps.stores.get('mem')!.write(RESTORED_MANIFEST, '{}');
  // A restore of a version the store does not have is 404 before it reads `wait`.
  versionId = (await service.deps.stores.get('repo')!.createVersion('some/key', 'x', { message: 'a version to restore' })).versionId;
  const query = HonoRequest.prototype.query as (this: HonoRequest, key?: string) => unknown;
  // `c.req.query(name)` reads one parameter; `c.req.query()` is parsed by a schema, which reads its fields.
  vi.spyOn(HonoRequest.prototype, 'query').mockImplementation(function (this: HonoRequest, key?: string) {
    if (key !== undefined) read.add(key);
    const value = query.call(this, key);
    if (key !== undefined) return value;
    return new Proxy(value as Record<string, string>, {
      get: (target, name) => (typeof name === 'string' && read.add(name), Reflect.get(target, name)),
    });
  } as never);
});
afterAll(async () => {
  vi.restoreAllMocks();
  await service?.close();
});

const RESTORED_MANIFEST = 'backups/files/manifests/001m0000000000000000000000.json';
const maintenanceBodies: Record<string, unknown> = {
  backup: { store: 'files', target: 'mem' },
  'restore-backup': { manifest: RESTORED_MANIFEST, store: 'files', from: 'mem' },
  migrate: { from: 'files', to: 'mem' },
};

/** A request that gets as far as the route goes: signed where it must be, with a body where it takes one. */
function requestFor(route: RouteSpec): [string, RequestInit] {
  const path = route.path.replace('{store}', 'repo').replace('{key}', 'some/key').replace('{versionId}', versionId).replace('{id}', 'objects-x');
  const init: RequestInit = { method: route.method };
  if (route.auth === 'signature') {
    const expires = Math.floor(Date.now() / 1000) + 60;
    return [service.deps.signer.sign({ method: route.method === 'PUT' ? 'PUT' : 'GET', store: 'repo', key: 'some/key', expires }), { ...init, body: route.method === 'PUT' ? 'x' : undefined }];
  }
  if (path.startsWith('/v1/maintenance/')) return [path, { ...init, body: JSON.stringify(maintenanceBodies[path.split('/').pop()!] ?? {}) }];
  if (path.endsWith('/diff')) return [`${path}?from=v1`, init];
  return [path, route.method === 'PUT' || route.method === 'POST' ? { ...init, body: 'x' } : init];
}

type Operation = { parameters: { name: string; in: string }[]; responses: Record<string, unknown> };

async function openApiPaths(): Promise<Record<string, Record<string, Operation>>> {
  return ((await (await service.app.request('/openapi.json')).json()) as { paths: Record<string, Record<string, Operation>> }).paths;
}

const names = (operation: Operation, where: string) => operation.parameters.filter((parameter) => parameter.in === where).map((parameter) => parameter.name);

describe('/openapi.json', () => {
  it.each(routeTable.map((route) => [route.method, route.path, route] as const))('%s %s documents exactly the query parameters it reads', async (method, path, route) => {
    const documented = names((await openApiPaths())[path]![method.toLowerCase()]!, 'query');
    read = new Set();
    const response = await service.app.request(...requestFor(route));
    await response.body?.cancel(); // the event stream would never end
    expect([...route.ok, 404], 'the request got as far as the route goes (a read of no object is 404)').toContain(response.status);
    expect([...read].sort()).toEqual(documented.sort());
  });

  it('object reads, direct or signed, document HEAD, the conditional and Range headers and the statuses they ask for', async () => {
    const paths = await openApiPaths();
    for (const path of ['/v1/stores/{store}/objects/{key}', '/v1/signed/{store}/{key}']) {
      const { get, head } = paths[path]!;
      expect(names(get!, 'header')).toEqual(expect.arrayContaining(['Range', 'If-Range', 'If-Match', 'If-None-Match', 'If-Modified-Since', 'If-Unmodified-Since']));
      expect(Object.keys(get!.responses)).toEqual(expect.arrayContaining(['200', '206', '304', '412', '416']));
      expect(Object.keys(head!.responses)).toEqual(expect.arrayContaining(['200', '304', '412']));
    }
  });

  it('every route that reads ?wait documents its 200 and 202 and Idempotency-Key', async () => {
    const paths = await openApiPaths();
    const waiting = Object.values(paths).flatMap((operations) => Object.values(operations)).filter((operation) => names(operation, 'query').includes('wait'));
    expect(waiting.length).toBeGreaterThan(0);
    for (const operation of waiting) {
      expect(Object.keys(operation.responses)).toEqual(expect.arrayContaining(['200', '202']));
      expect(names(operation, 'header')).toContain('Idempotency-Key');
    }
  });
});
