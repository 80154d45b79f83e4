/**
 * `/openapi.json` against what the routes do: every route of the table is called while the query parameters its
 * handler reads are recorded, and those must be exactly the ones the document lists for it; what it answers must be
 * a status the document lists, with the headers and the JSON body the document gives it. The rest checks what a
 * client relies on and cannot see from one call: bodies, the error schema, 403 on signed URLs, 405 and HEAD.
 */
import { HonoRequest } from 'hono/request';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { jobs } from '../../src/jobs/index.js';
import { routeTable, type RouteSpec } from '../../src/api/openapi.js';
import { MAINTENANCE_TASKS } from '../../src/api/routes/maintenance.js';
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
  // `c.req.queries(name)` reads every value of a repeatable one (`?types=a&types=b`).
  const queries = HonoRequest.prototype.queries as (this: HonoRequest, key: string) => unknown;
  vi.spyOn(HonoRequest.prototype, 'queries').mockImplementation(function (this: HonoRequest, key: string) {
    read.add(key);
    return queries.call(this, key);
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

const concrete = (path: string) => path.replace('{store}', 'repo').replace('{key}', 'some/key').replace('{versionId}', versionId).replace('{id}', 'objects-x');

function signed(method: 'GET' | 'PUT'): string {
  return service.deps.signer.sign({ method, store: 'repo', key: 'some/key', expires: Math.floor(Date.now() / 1000) + 60 });
}

/** A request that gets as far as the route goes: signed where it must be, with a body where it takes one. */
function requestFor(route: RouteSpec): [string, RequestInit] {
  const path = concrete(route.path);
  const init: RequestInit = { method: route.method };
  if (route.auth === 'signature') return [signed(route.method === 'PUT' ? 'PUT' : 'GET'), { ...init, body: route.method === 'PUT' ? 'x' : undefined }];
  if (path.startsWith('/v1/maintenance/') || path === '/v1/webhooks/redeliver') {
    return [path, { ...init, body: JSON.stringify(maintenanceBodies[path.split('/').pop()!] ?? {}), headers: { 'Content-Type': 'application/json' } }];
  }
  if (path.endsWith('/diff')) return [`${path}?from=v1`, init];
  if (route.method === 'DELETE' && /\/objects\/?$/.test(path)) return [`${path}?prefix=nothing-under-here/`, init];
  return [path, route.method === 'PUT' || route.method === 'POST' ? { ...init, body: 'x' } : init];
}

type Schema = Record<string, unknown>;
type Answer = { description: string; headers?: Record<string, unknown>; content?: Record<string, { schema?: Schema }> };
type Operation = {
  description?: string;
  parameters: { name: string; in: string; required: boolean; description: string; schema: Schema }[];
  requestBody?: { description: string; content: Record<string, { schema?: Schema }> };
  responses: Record<string, Answer>;
};
type PathItem = Record<string, Operation>;
type Document = { components: { schemas: Record<string, Schema> }; paths: Record<string, PathItem> };

async function openApi(): Promise<Document> {
  return (await (await service.app.request('/openapi.json')).json()) as Document;
}

const operationOf = async (method: string, path: string) => (await openApi()).paths[path]![method.toLowerCase()] as Operation;
const names = (operation: Operation, where: string) => operation.parameters.filter((parameter) => parameter.in === where).map((parameter) => parameter.name);
const parameter = (operation: Operation, name: string) => operation.parameters.find((candidate) => candidate.name === name);
const operations = (document: Document) =>
  Object.entries(document.paths).flatMap(([path, item]) => Object.entries(item).map(([method, operation]) => ({ path, method, operation })));

/** Why `value` does not fit `schema` (the JSON Schema the document uses: refs, types, required, enum, const, oneOf), or none. */
function misfit(document: Document, schema: Schema, value: unknown, at = '$'): string | undefined {
  if (typeof schema.$ref === 'string') return misfit(document, document.components.schemas[schema.$ref.split('/').pop()!]!, value, at);
  if ('const' in schema && value !== schema.const) return `${at} is not ${JSON.stringify(schema.const)}`;
  if (Array.isArray(schema.enum) && !schema.enum.includes(value)) return `${at}: ${JSON.stringify(value)} is not one of ${schema.enum.join(', ')}`;
  const type = schema.type as string | undefined;
  const actual = value === null ? 'null' : Array.isArray(value) ? 'array' : Number.isInteger(value) ? 'integer' : typeof value;
  if (type !== undefined && type !== actual && !(type === 'number' && actual === 'integer')) return `${at} is ${actual}, not ${type}`;
  if (Array.isArray(schema.oneOf) && !schema.oneOf.some((branch) => misfit(document, branch as Schema, value, at) === undefined)) return `${at} fits no oneOf branch`;
  if (Array.isArray(value)) return value.map((item, i) => (schema.items ? misfit(document, schema.items as Schema, item, `${at}[${i}]`) : undefined)).find(Boolean);
  if (actual !== 'object') return undefined;
  const object = value as Record<string, unknown>;
  const missing = ((schema.required ?? []) as string[]).find((name) => !(name in object));
  if (missing !== undefined) return `${at}.${missing} is missing`;
  const properties = (schema.properties ?? {}) as Record<string, Schema>;
  return Object.entries(object)
    .map(([name, item]) => {
      const property = properties[name] ?? (typeof schema.additionalProperties === 'object' ? (schema.additionalProperties as Schema) : undefined);
      if (property === undefined && schema.additionalProperties === false) return `${at}.${name} is not in the schema`;
      return property && misfit(document, property, item, `${at}.${name}`);
    })
    .find(Boolean);
}

/** Response headers the document describes where they are sent. */
const DESCRIBED_HEADERS = ['ETag', 'Last-Modified', 'Cache-Control', 'Accept-Ranges', 'X-Kyozo-Version', 'Content-Range', 'Location', 'Retry-After', 'WWW-Authenticate'];

describe('/openapi.json', () => {
  const table = routeTable.map((route) => [route.method, route.path, route] as const);

  it.each(table)('%s %s documents exactly the query parameters it reads', async (method, path, route) => {
    const operation = await operationOf(method, path);
    const documented = names(operation, 'query');
    read = new Set();
    const response = await service.app.request(...requestFor(route));
    await response.body?.cancel(); // the event stream would never end
    const succeeds = Object.keys(operation.responses).map(Number).filter((status) => status < 400);
    expect([...succeeds, 404], 'the request got as far as the route goes (a read of no object is 404)').toContain(response.status);
    expect([...read].sort()).toEqual(documented.sort());
  });

  it.each(table)('%s %s answers with a status it documents, and that status’s headers and body', async (method, path, route) => {
    const document = await openApi();
    const operation = document.paths[path]![method.toLowerCase()] as Operation;
    const response = await service.app.request(...requestFor(route));
    const answer = operation.responses[String(response.status)];
    expect(answer, `${response.status} is documented`).toBeDefined();
    for (const header of DESCRIBED_HEADERS) {
      if (response.headers.has(header)) expect(Object.keys(answer!.headers ?? {}), `${response.status} documents ${header}`).toContain(header);
    }
    const mediaType = response.headers.get('content-type')?.split(';')[0]!.trim();
    if (method === 'HEAD' || response.status === 304) {
      expect(answer!.content, 'no body').toBeUndefined();
      return;
    }
    const documented = Object.keys(answer!.content ?? {});
    expect(documented.some((type) => type === '*/*' || type === mediaType), `${mediaType} among ${documented.join(', ')}`).toBe(true);
    if (mediaType === 'application/json') {
      const schema = answer!.content!['application/json']!.schema!;
      expect(misfit(document, schema, await response.json())).toBeUndefined();
    } else {
      await response.body?.cancel();
    }
  });

  it('object reads, direct or signed, document HEAD, the conditional and Range headers and the statuses they ask for', async () => {
    const paths = (await openApi()).paths;
    for (const path of ['/v1/stores/{store}/objects/{key}', '/v1/signed/{store}/{key}']) {
      const { get, head } = paths[path]!;
      expect(names(get!, 'header')).toEqual(expect.arrayContaining(['Range', 'If-Range', 'If-Match', 'If-None-Match', 'If-Modified-Since', 'If-Unmodified-Since']));
      expect(Object.keys(get!.responses)).toEqual(expect.arrayContaining(['200', '206', '304', '412', '416']));
      expect(Object.keys(head!.responses)).toEqual(expect.arrayContaining(['200', '304', '412']));
    }
  });

  it('every route that reads ?wait documents its 200 and 202 and Idempotency-Key', async () => {
    const waiting = operations(await openApi()).filter(({ operation }) => names(operation, 'query').includes('wait'));
    expect(waiting.length).toBeGreaterThan(0);
    for (const { operation } of waiting) {
      expect(Object.keys(operation.responses)).toEqual(expect.arrayContaining(['200', '202']));
      expect(names(operation, 'header')).toContain('Idempotency-Key');
    }
  });

  it('diff requires `from`, and `from` and `to` each take a version id or a branch name', async () => {
    const diff = await operationOf('GET', '/v1/stores/{store}/objects/{key}/diff');
    expect(parameter(diff, 'from')).toMatchObject({ required: true, description: expect.stringMatching(/version id.*branch/) });
    expect(parameter(diff, 'to')).toMatchObject({ required: false, description: expect.stringMatching(/version id.*branch/) });
    const withoutFrom = await service.app.request('/v1/stores/repo/objects/some/key/diff');
    expect(diff.responses[String(withoutFrom.status)]?.description, 'the answer to a diff without `from`').toMatch(/`from`/);
    expect(((await withoutFrom.json()) as { error: { message: string } }).error.message).toBe('from: required: a version id or a branch name');
    const fromBranch = await service.app.request('/v1/stores/repo/objects/some/key/diff?from=main');
    expect(diff.responses[String(fromBranch.status)]?.content?.['application/json']?.schema, 'a diff from a branch').toEqual({ $ref: '#/components/schemas/Diff' });
  });

  it('routes that read a body document it as requestBody, and no Content-Type header parameter', async () => {
    const document = await openApi();
    for (const { method, path, operation } of operations(document)) {
      expect(names(operation, 'header').map((name) => name.toLowerCase()), `${method} ${path}`).not.toContain('content-type');
    }
    for (const [method, path] of [
      ['put', '/v1/stores/{store}/objects/{key}'],
      ['post', '/v1/stores/{store}/objects/{key}/versions'],
      ['put', '/v1/signed/{store}/{key}'],
    ] as const) {
      const body = document.paths[path]![method]!.requestBody;
      expect(body?.content, `${method} ${path}`).toEqual({ '*/*': {} });
      expect(body?.description).toMatch(/Content-Type/);
    }
    for (const task of MAINTENANCE_TASKS) {
      const schema = document.paths[`/v1/maintenance/${task}`]!.post!.requestBody?.content['application/json']?.schema;
      expect(Object.keys((schema?.properties ?? {}) as object), task).toEqual(Object.keys(jobs[task].schema.shape));
      expect(schema?.additionalProperties, task).toBe(false);
    }
  });

  it('signed routes document 403 FORBIDDEN, not 401, and answer it', async () => {
    const document = await openApi();
    const signedRoutes = routeTable.filter((route) => route.auth === 'signature');
    expect(signedRoutes.length).toBeGreaterThan(0);
    for (const route of signedRoutes) {
      const { responses } = document.paths[route.path]![route.method.toLowerCase()]!;
      expect(Object.keys(responses), `${route.method} ${route.path}`).not.toContain('401');
      const [url, init] = requestFor(route);
      const refused = await service.app.request(url.replace(/signature=[0-9a-f]+/, `signature=${'0'.repeat(64)}`), init);
      expect(responses[String(refused.status)]?.description, `${route.method} ${route.path} with a tampered signature`).toMatch(/^FORBIDDEN/);
    }
  });

  it.each(table)('%s %s documents the request gate\'s 403 and answers it to a Host that is not loopback (no API_TOKENS)', async (method, path, route) => {
    const operation = (await openApi()).paths[path]![method.toLowerCase()] as Operation;
    const [url, init] = requestFor(route);
    const refused = await service.app.request(url, { ...init, headers: { ...(init.headers as Record<string, string>), Host: 'rebound.example' } });
    expect(refused.status).toBe(403);
    expect(operation.responses['403']?.description).toMatch(/FORBIDDEN: without API_TOKENS, a Host that is not loopback/);
  });

  it('Accept-Encoding is documented on the 415 of a content body (it names what the API decodes), not on a JSON body\'s', async () => {
    const paths = (await openApi()).paths;
    expect(Object.keys(paths['/v1/stores/{store}/objects/{key}']!.put!.responses['415']?.headers ?? {})).toContain('Accept-Encoding');
    const maintenance = paths['/v1/maintenance/cleanup']!.post!.responses['415'];
    expect(maintenance?.description).toMatch(/^UNSUPPORTED_MEDIA_TYPE/);
    expect(Object.keys(maintenance?.headers ?? {})).not.toContain('Accept-Encoding');
    const answer = await service.app.request('/v1/maintenance/cleanup', { method: 'POST', body: '{}', headers: { 'Content-Type': 'text/plain' } });
    expect(answer.status).toBe(415);
    expect(answer.headers.has('accept-encoding')).toBe(false);
  });

  it('every mutation documents 202 with Location and its job, 200 under ?wait=true, and 503 with Retry-After', async () => {
    // Redelivery moves failed deliveries back in their queues, as the board's retry does: no job of its own.
    const queueActions = new Set(['/v1/webhooks/redeliver']);
    const mutations = operations(await openApi()).filter(({ method, path }) => ['put', 'post', 'delete'].includes(method) && !queueActions.has(path));
    expect(mutations.length).toBeGreaterThanOrEqual(10);
    for (const { method, path, operation } of mutations) {
      const { 200: done, 202: accepted, 503: unavailable } = operation.responses;
      expect(accepted?.content?.['application/json']?.schema, `${method} ${path}`).toEqual({ $ref: '#/components/schemas/JobAccepted' });
      expect(Object.keys(accepted?.headers ?? {}), `${method} ${path}`).toContain('Location');
      expect(done?.content?.['application/json']?.schema, `${method} ${path}`).toBeDefined();
      expect(Object.keys(unavailable?.headers ?? {}), `${method} ${path}`).toContain('Retry-After');
      expect(unavailable?.description).toMatch(/^SERVICE_UNAVAILABLE/);
    }
  });

  it('the job status, the event stream and redelivery, which need Redis too, document 503 with Retry-After', async () => {
    const paths = (await openApi()).paths;
    for (const operation of [paths['/v1/jobs/{id}']!.get!, paths['/v1/events']!.get!, paths['/v1/events']!.head!, paths['/v1/webhooks/redeliver']!.post!]) {
      expect(Object.keys(operation.responses['503']?.headers ?? {})).toContain('Retry-After');
    }
    expect(names(paths['/v1/events']!.get!, 'query')).toContain('since');
  });

  it('every error answer is the shared Error schema, whose codes include FORBIDDEN', async () => {
    const document = await openApi();
    const error = document.components.schemas?.Error;
    expect(error, 'components.schemas.Error').toBeDefined();
    expect(misfit(document, error!, { error: { code: 'FORBIDDEN', message: 'expired' } })).toBeUndefined();
    expect(misfit(document, error!, { error: { message: 'no code' } })).toBeDefined();
    let answers = 0;
    for (const { method, path, operation } of operations(document)) {
      if (method === 'head') continue;
      for (const [status, answer] of Object.entries(operation.responses)) {
        // /ready answers 503 with its report of what is down.
        if (Number(status) < 400 || (path === '/ready' && status === '503')) continue;
        expect(answer.content?.['application/json']?.schema, `${method} ${path} ${status}`).toEqual({ $ref: '#/components/schemas/Error' });
        answers++;
      }
    }
    expect(answers).toBeGreaterThan(100);
  });

  it('every path answers the methods it documents, HEAD wherever GET, and any other with 405 and that Allow', async () => {
    const document = await openApi();
    const answersOtherMethods = (path: string) => routeTable.some((route) => route.path === path && route.refusesOtherMethods !== false);
    for (const [path, item] of Object.entries(document.paths).filter(([path]) => answersOtherMethods(path))) {
      const refused = await service.app.request(concrete(path), { method: 'PATCH' });
      expect(refused.status, path).toBe(405);
      const allow = refused.headers.get('allow')!;
      expect(allow.toLowerCase().split(', ').sort(), path).toEqual(Object.keys(item).sort());
      for (const operation of Object.values(item)) expect(operation.description ?? '', path).toContain(`405 METHOD_NOT_ALLOWED, with Allow: ${allow}.`);
    }
    expect(document.paths['/v1/stores/{store}/objects/']?.get, 'the list at .../objects/ too').toBeDefined();
  });

  it('?wait and ?allVersions are booleans: `true` or `false`', async () => {
    const flags = operations(await openApi()).flatMap(({ operation }) => operation.parameters.filter((candidate) => ['wait', 'allVersions'].includes(candidate.name)));
    expect(flags.length).toBeGreaterThanOrEqual(11);
    for (const flag of flags) expect(flag.schema.type, flag.name).toBe('boolean');
  });

  it('X-Meta-*, X-Version-Message and X-Author are documented with their encodings, Idempotency-Key with its length', async () => {
    const paths = (await openApi()).paths;
    const object = paths['/v1/stores/{store}/objects/{key}']!;
    const signedItem = paths['/v1/signed/{store}/{key}']!;
    const versions = paths['/v1/stores/{store}/objects/{key}/versions']!.post!;
    for (const writing of [object.put!, versions, signedItem.put!]) expect(writing.description ?? '').toMatch(/X-Meta-<name>.*utf-8''<percent-encoded>/s);
    for (const reading of [object.get!, object.head!, signedItem.get!, signedItem.head!]) expect(reading.description ?? '').toMatch(/X-Meta-<name>.*utf-8''/s);
    for (const name of ['X-Version-Message', 'X-Author']) expect(parameter(versions, name)?.description ?? '', name).toMatch(/raw UTF-8 or `utf-8''<percent-encoded>`/);
    for (const { operation } of operations({ paths } as Document).filter(({ operation }) => names(operation, 'header').includes('Idempotency-Key'))) {
      expect(parameter(operation, 'Idempotency-Key')).toMatchObject({ schema: { minLength: 1, maxLength: 256 }, description: expect.stringMatching(/before the body/) });
    }
  });
});
