/**
 * Promise 4: hostile input gets a clear error and changes nothing. Against a real HTTP server (raw requests, paths
 * sent exactly as written):
 *
 * - a fast-check property over generated object paths (percent-encoded and literal dot segments, overlong and
 *   broken UTF-8, NUL and other controls, mixed and encoded slashes and backslashes, very long keys, Unicode
 *   normalisation variants and look-alikes, reserved characters, raw Latin-1 bytes, hostile store segments):
 *   never a 5xx, a 400 exactly when the key is invalid, and afterwards no file outside the store's root and no
 *   object under a key other than the one its request named;
 * - oversized bodies (with Content-Length and chunked), stalled and slow bodies, malformed JSON, bad Range and huge
 *   header values, each with its 4xx and nothing written or left staged.
 *
 * The oracle below decides what a path means from DESIGN §4 and §8 (split on raw `/`, percent-decode each segment,
 * then the key rules), independently of `object-path.ts` and `keys.ts`.
 */
import { mkdir, readdir, rm } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/api/app.js';
import { listen, type HttpServer } from '../../src/api/server.js';
import { quietLog, startTestService, type TestService } from '../support/service.js';
import { reportFigures, scaled, sleep, tempDir, waitUntil } from './fixtures/processes.js';
import { json, rawRequest, rawStream, type RawResponse } from './fixtures/raw-http.js';

const MIB = 1024 * 1024;
/** Requests per property run, sent together; runs × batch = inputs tried. */
const BATCH = 10;
const RUNS = scaled(1_000, 10_000);
const BODY_IDLE_MS = 1_500;

let sandbox: string;
let root: string;
let service: TestService;
let server: HttpServer;
let base: string;
const agent = new http.Agent({ keepAlive: true, maxSockets: BATCH });

beforeAll(async () => {
  // The root sits four levels deep in a sandbox: a path that climbed out of it would still land in the sandbox.
  sandbox = await tempDir('hostile');
  root = path.join(sandbox, 'a', 'b', 'c', 'root');
  await mkdir(root, { recursive: true });
  service = await startTestService('rel-hostile', {
    STORAGE_ROOT_DIR: root,
    STORES: 'files:disk',
    MAX_OBJECT_BYTES: String(MIB),
    STAGING_INLINE_MAX: String(16 * 1024),
    WORKER_CONCURRENCY: '4',
  });
  server = await listen(createApp({ ...service.deps, bodyIdleTimeoutMs: BODY_IDLE_MS }), { host: '127.0.0.1', port: 0, apiTokens: [] }, quietLog);
  base = server.url;
}, 60_000);

afterAll(async () => {
  agent.destroy();
  await server?.close();
  await service?.close();
  if (sandbox) await rm(sandbox, { recursive: true, force: true });
});

// ---- the oracle ----

type Meaning =
  | { valid: false; why: string }
  | { valid: true; store: string; key: string; kind: 'object' | 'versions' | 'url' | 'diff' | 'restore' | 'list' };

const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

function keyProblem(key: string): string | undefined {
  if (key === '') return 'empty';
  if (Buffer.byteLength(key, 'utf8') > 1024) return 'longer than 1024 bytes';
  if (LONE_SURROGATE.test(key)) return 'not well-formed Unicode';
  if (key.includes('\\')) return 'backslash';
  if (CONTROL.test(key)) return 'control character';
  for (const segment of key.split('/')) {
    if (segment === '') return 'empty segment';
    if (segment === '.' || segment === '..') return 'dot segment';
  }
  return undefined;
}

function decode(raw: string): string | undefined {
  try {
    return decodeURIComponent(raw);
  } catch {
    return undefined;
  }
}

/** What `/v1/stores/<storeSegment>/objects/<keyPath>` means. */
function meaning(storeSegment: string, keyPath: string): Meaning {
  // A literal '\' or '#' cannot be part of a request target (URL parsers read them as '/' and a fragment).
  if (/[\\#]/.test(storeSegment + keyPath)) return { valid: false, why: "a literal '\\' or '#'" };
  const store = decode(storeSegment);
  if (store !== 'files') return { valid: false, why: `store segment ${JSON.stringify(storeSegment)}` };
  // Nothing after `objects/` is the store's listing, not an empty key.
  if (keyPath === '') return { valid: true, store, key: '', kind: 'list' };
  const raw = keyPath.split('/');
  const last = raw[raw.length - 1];
  let kind: Exclude<Meaning, { valid: false }>['kind'] = 'object';
  let keySegments = raw;
  if (raw.length >= 2 && (last === 'versions' || last === 'url' || last === 'diff')) {
    kind = last;
    keySegments = raw.slice(0, -1);
  } else if (raw.length >= 4 && last === 'restore' && raw[raw.length - 3] === 'versions') {
    kind = 'restore';
    keySegments = raw.slice(0, -3);
  }
  const decoded = keySegments.map(decode);
  if (decoded.some((segment) => segment === undefined)) return { valid: false, why: 'bad percent-encoding' };
  const key = decoded.join('/');
  const problem = keyProblem(key);
  return problem === undefined ? { valid: true, store, key, kind } : { valid: false, why: problem };
}

// ---- the generators ----

/** Percent-encodes any string as UTF-8; a lone surrogate (no UTF-8 form) becomes its CESU-8 bytes. */
function percentEncode(text: string): string {
  try {
    return encodeURIComponent(text);
  } catch {
    return '%ED%A0%80';
  }
}

const atom = fc.oneof(
  { weight: 8, arbitrary: fc.stringMatching(/^[A-Za-z0-9_~-]{1,10}$/) },
  { weight: 3, arbitrary: fc.constantFrom('.', '..', '...', '%2e', '%2E', '%2e%2e', '.%2E', '%2E.', '%2e%2E%2e', '.%2e.') },
  { weight: 2, arbitrary: fc.constantFrom('%2F', '%2f', '%5C', '%5c', '\\', '%00', '%01', '%09', '%0A', '%0D', '%1F', '%7F', '%C2%80', '%C2%85', '%C2%9F') },
  // Overlong and otherwise invalid UTF-8, stray percent signs.
  { weight: 2, arbitrary: fc.constantFrom('%C0%AE', '%C0%AF', '%E0%80%AE', '%C0%80', '%C1%9C', '%ED%A0%80', '%F4%90%80%80', '%FF', '%', '%2', '%zz', '%%', '%u002e') },
  // Normalisation variants (é composed and decomposed, Å, Å as Angstrom sign) and look-alikes of '.', '/' and '\'.
  { weight: 2, arbitrary: fc.constantFrom('%C3%A9', 'e%CC%81', '%C3%85', 'A%CC%8A', '%E2%84%AB', '%EF%BC%8E', '%E2%80%A4', '%EF%BC%8F', '%E2%88%95', '%EF%BC%BC', '%EF%B9%92') },
  { weight: 2, arbitrary: fc.constantFrom(';', ',', '=', '@', ':', '!', '$', '&', "'", '(', ')', '*', '+', '#', '[', ']', '|', '{', '}', '^', '`', '"', '<', '>', '%3F', '%23', '%25', '%20', '~') },
  { weight: 1, arbitrary: fc.constantFrom('versions', 'url', 'diff', 'restore') },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 6 }).map(percentEncode) },
  { weight: 1, arbitrary: fc.constantFrom('\u00e9', '\u00ff', '\u00a0', '\u0085', '\u00c0\u00ae') },
  { weight: 1, arbitrary: fc.integer({ min: 100, max: 1100 }).map((n) => 'k'.repeat(n)) },
);
/** Atoms that keep a key valid (so that about half the requests reach storage). */
const benignAtom = fc.oneof(
  { weight: 8, arbitrary: fc.stringMatching(/^[A-Za-z0-9_~-]{1,10}$/) },
  { weight: 2, arbitrary: fc.constantFrom('%C3%A9', 'e%CC%81', '%C3%85', 'A%CC%8A', '%E2%84%AB', '%EF%BC%8E', '%E2%80%A4', '%EF%BC%8F', '%E2%88%95', '%F0%9F%98%80') },
  { weight: 2, arbitrary: fc.constantFrom(';', ',', '=', '@', ':', '!', '$', '&', "'", '(', ')', '*', '+', '%3F', '%23', '%25', '%20', '...', '.a', 'a.', '%2e%2e%2e') },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 4 }).filter((text) => !/[\u0000-\u001f\u007f-\u009f\\/]/.test(text)).map(percentEncode) },
  { weight: 1, arbitrary: fc.integer({ min: 50, max: 400 }).map((n) => 'k'.repeat(n)) },
);
const segment = fc.array(atom, { minLength: 0, maxLength: 4 }).map((atoms) => atoms.join(''));
const benignSegment = fc.array(benignAtom, { minLength: 1, maxLength: 3 }).map((atoms) => atoms.join(''));
const separator = fc.constantFrom('/', '/', '/', '/', '/', '%2F', '//', '\\', '%5C', '/./', '/../');
const hostileKeyPath = fc
  .tuple(fc.array(fc.tuple(segment, separator), { maxLength: 5 }), segment)
  .map(([pairs, lastSegment]) => pairs.map(([s, sep]) => s + sep).join('') + lastSegment);
const keyPath = fc.oneof(hostileKeyPath, fc.array(benignSegment, { minLength: 1, maxLength: 4 }).map((segments) => segments.join('/')));
const storeSegment = fc.oneof(
  { weight: 12, arbitrary: fc.constant('files') },
  { weight: 1, arbitrary: fc.constant('%66iles') },
  { weight: 1, arbitrary: fc.constantFrom('..', '%2e%2e', 'x\\..\\files', 'files%2F..', 'files\\..\\files', '.', 'FILES', 'files%00', '%2E%2E%2Ffiles') },
);
const method = fc.constantFrom('PUT', 'PUT', 'PUT', 'PUT', 'PUT', 'GET', 'GET', 'GET', 'HEAD', 'POST');
const request = fc.record({ method, storeSegment, keyPath });

// ---- the property ----

interface Tried {
  method: string;
  path: string;
  meaning: Meaning;
  status: number;
}

async function send(method: string, storeSeg: string, rawKeyPath: string, n: number): Promise<Tried> {
  const requestPath = `/v1/stores/${storeSeg}/objects/${rawKeyPath}`;
  const m = meaning(storeSeg, rawKeyPath);
  const body = method === 'PUT' || method === 'POST' ? JSON.stringify({ key: m.valid ? m.key : null, n }) : undefined;
  let response: RawResponse;
  try {
    response = await rawRequest(base, requestPath, { method, body, agent, headers: body ? { 'Content-Type': 'application/json' } : {} });
  } catch (error) {
    // http.request refuses to send a path with bytes outside 0x21-0xFF: not the server's doing.
    if (error instanceof TypeError && /unescaped characters/.test(error.message)) return { method, path: requestPath, meaning: m, status: 0 };
    throw error;
  }
  return { method, path: requestPath, meaning: m, status: response.status };
}

/** Why a response breaks the promise, or undefined. */
function violation({ method, meaning: m, status, path: requestPath }: Tried): string | undefined {
  if (status === 0) return undefined;
  const where = `${method} ${requestPath.slice(0, 200)} -> ${status}`;
  if (status >= 500 && !(status === 501 && m.valid && m.kind === 'diff')) return `${where}: server error`;
  const rawNonAscii = /[\u0080-\u00ff]/.test(requestPath);
  if (!m.valid) return status >= 400 && status < 500 ? undefined : `${where}: accepted although ${m.why}`;
  if (rawNonAscii && status === 400) return undefined; // raw bytes outside ASCII may be refused outright
  const expected: Record<string, number[]> = {
    'PUT object': [202],
    'GET object': [200, 404],
    'HEAD object': [200, 404],
    'POST versions': [202],
    'GET versions': [200],
    'HEAD versions': [200],
    'GET url': [200, 404],
    'HEAD url': [200, 404],
    'GET diff': [501],
    'HEAD diff': [501],
    'POST restore': [202, 400],
    'GET list': [200],
    'HEAD list': [200],
  };
  // Any other method of a valid resource is one it does not answer: 405 (or 400/404 for what the key itself decides).
  const allowed = expected[`${method} ${m.kind}`] ?? [400, 404, 405];
  return allowed.includes(status) ? undefined : `${where}: expected ${allowed.join(' or ')} for key ${JSON.stringify(m.key).slice(0, 120)}`;
}

async function filesOutside(dir: string, allowedRoot: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  const stray: string[] = [];
  for (const entry of entries) {
    const full = path.join(entry.parentPath, entry.name);
    if (entry.isSymbolicLink()) stray.push(`symlink ${full}`);
    else if (!entry.isDirectory() && !full.startsWith(allowedRoot + path.sep)) stray.push(full);
  }
  return stray;
}

describe('generated hostile paths through the HTTP API', () => {
  it(`never a 5xx, 400 exactly for invalid keys, nothing outside the root, nothing under another key (${RUNS * BATCH} inputs)`, async () => {
    const statuses = new Map<number, number>();
    const accepted = new Map<string, number>();
    let tried = 0;
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(request, { minLength: BATCH, maxLength: BATCH }), async (batch) => {
        const results = await Promise.all(batch.map((r) => send(r.method, r.storeSegment, r.keyPath, n++)));
        for (const result of results) {
          tried++;
          statuses.set(result.status, (statuses.get(result.status) ?? 0) + 1);
          const problem = violation(result);
          if (problem !== undefined) throw new Error(problem);
          if (result.meaning.valid && result.status === 202) accepted.set(result.meaning.key, (accepted.get(result.meaning.key) ?? 0) + 1);
        }
      }),
      { numRuns: RUNS, endOnFailure: false },
    );

    const queue = service.deps.queues.queue('objects');
    await waitUntil(
      async () => {
        const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized');
        return Object.values(counts).every((count) => count === 0);
      },
      { timeoutMs: 180_000, intervalMs: 200, what: 'the queue to drain' },
    );
    const failed = await queue.getFailed(0, 20);
    expect(failed.map((job) => `${job.data.key as string}: ${job.failedReason}`)).toEqual([]);

    // Every object is under the key its request named, and every accepted key is there.
    const files = service.deps.stores.get('files')!;
    const misplaced: string[] = [];
    const present = new Set<string>();
    let cursor: string | undefined;
    do {
      const page = await files.list({ cursor, limit: 1000 });
      for (const item of page.items) {
        present.add(item.key);
        const { body } = await files.read(item.key);
        const chunks: Buffer[] = [];
        for await (const chunk of body) chunks.push(chunk as Buffer);
        const named = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { key: string }).key;
        if (named !== item.key) misplaced.push(`${JSON.stringify(item.key)} holds the body sent for ${JSON.stringify(named)}`);
      }
      cursor = page.cursor;
    } while (cursor !== undefined);
    expect(misplaced).toEqual([]);
    expect([...accepted.keys()].filter((key) => !present.has(key))).toEqual([]);
    // Files exist only in the store's tree and in staging (a root-level sibling), nowhere else in the sandbox.
    expect(await filesOutside(sandbox, root)).toEqual([]);
    expect((await readdir(root)).filter((name) => name !== 'files' && name !== '.staging')).toEqual([]);
    expect((await readdir(path.join(root, 'files'))).filter((name) => name !== 'objects' && name !== 'versions')).toEqual([]);

    reportFigures('4 hostile input', {
      inputsTried: tried,
      statuses: Object.fromEntries([...statuses].sort(([a], [b]) => a - b)),
      fiveHundreds: [...statuses].filter(([status]) => status >= 500 && status !== 501).reduce((sum, [, count]) => sum + count, 0),
      keysAccepted: accepted.size,
      objectsStored: present.size,
      misplaced: misplaced.length,
    });
  }, scaled(600_000, 3_600_000));
});

describe('hostile bodies and headers over real HTTP', () => {
  const objectPath = (key: string) => `/v1/stores/files/objects/${key}`;
  const stagedFiles = async () => (await service.stagingProvider.list()).items.length;
  const absent = async (key: string) => expect((await rawRequest(base, objectPath(key), { method: 'HEAD' })).status).toBe(404);

  it('a literal # or backslash in a path is 400: routing (URL-parsed) and the key (raw) cannot disagree', async () => {
    // `%2E.#` was routed as a `..` segment (404) while its key read '..#'; `a#b` was routed as `a`. A literal `\`
    // (which URL parsing reads as `/`) is refused by @hono/node-server itself, with an empty 400.
    for (const requestPath of ['/v1/stores/files/objects/a#b', '/v1/stores/files/objects/%2E.#', '/v1/stores/files/objects/x/y#/z']) {
      const response = await rawRequest(base, requestPath, { method: 'PUT', body: 'x' });
      expect(response.status, requestPath).toBe(400);
      expect(json(response).error.code, requestPath).toBe('INVALID_KEY');
    }
    for (const requestPath of ['/v1/stores/x\\..\\files/objects/rerouted', '/v1/stores/files/objects/a\\..\\rerouted']) {
      expect((await rawRequest(base, requestPath, { method: 'PUT', body: 'x' })).status, requestPath).toBe(400);
    }
    await absent('rerouted');
    await absent('a%23b');
  });

  it('a store named "objects" takes the key after its own objects segment', async () => {
    const named = await startTestService('rel-objects-store', { STORES: 'objects:ram' });
    try {
      const response = await named.app.request('/v1/stores/objects/objects/k?wait=true', { method: 'PUT', body: 'mine' });
      expect(response.status).toBe(200);
      expect(((await response.json()) as { key: string }).key).toBe('k');
      expect((await named.app.request('/v1/stores/objects/objects/k')).status).toBe(200);
    } finally {
      await named.close();
    }
  });

  it('a body declared larger than MAX_OBJECT_BYTES is refused with 413 before it is read', async () => {
    const upload = rawStream(base, objectPath('too/big/declared'), { headers: { 'Content-Length': String(2 * MIB) } });
    for (let sent = 0; sent < 2 * MIB && !upload.answered; sent += 64 * 1024) await upload.write(Buffer.alloc(64 * 1024, 1));
    upload.end();
    const response = await upload.response;
    expect(response.status).toBe(413);
    expect(json(response).error.code).toBe('PAYLOAD_TOO_LARGE');
    await absent('too/big/declared');
  });

  it('a chunked body that grows past MAX_OBJECT_BYTES is refused with 413 and nothing is staged', async () => {
    const upload = rawStream(base, objectPath('too/big/chunked'), { headers: { 'Transfer-Encoding': 'chunked' } });
    for (let sent = 0; sent < 3 * MIB && !upload.answered; sent += 64 * 1024) await upload.write(Buffer.alloc(64 * 1024, 2));
    upload.end();
    const response = await upload.response;
    expect(response.status).toBe(413);
    expect(json(response).error.code).toBe('PAYLOAD_TOO_LARGE');
    await absent('too/big/chunked');
    expect(await stagedFiles()).toBe(0);
  });

  it.each([
    ['staged', 100 * 1024, 40 * 1024], // past STAGING_INLINE_MAX: a staging file is open
    ['inline-sized', 1024, 1016],
  ])('a body (%s) that stops arriving is answered 408 after the idle timeout, the connection closed, nothing staged', async (kind, declared, sent) => {
    const upload = rawStream(base, objectPath(`stalled/${kind}`), { headers: { 'Content-Length': String(declared) } });
    await upload.write(Buffer.alloc(sent, 3));
    const response = await upload.response;
    upload.destroy();
    expect(response.status).toBe(408);
    expect(json(response).error.code).toBe('REQUEST_TIMEOUT');
    expect(response.headers.connection).toBe('close'); // what the client sends after it is no body of anything
    await absent(`stalled/${kind}`);
    await waitUntil(async () => (await stagedFiles()) === 0, { timeoutMs: 5_000, what: 'the partial staging file to go' });
  });

  // Staged (over STAGING_INLINE_MAX) and inline-sized bodies take different paths until they are read.
  it.each([
    ['staged', 2048],
    ['inline-sized', 1024],
  ])('a slow but steady %s body is accepted however long it takes in all (only idleness counts)', async (kind, piece) => {
    const upload = rawStream(base, objectPath(`slow/steady-${kind}?wait=true`), { headers: { 'Content-Length': String(12 * piece) } });
    for (let i = 0; i < 12; i++) {
      await upload.write(Buffer.alloc(piece, 4));
      await sleep(BODY_IDLE_MS / 5); // 12 pieces: more than twice the idle timeout in all
    }
    upload.end();
    const response = await upload.response;
    expect(response.status).toBe(200);
    expect(json<{ size: number }>(response).size).toBe(12 * piece);
    // Node's own limit on a whole request (300 s by default) would cut off a large upload on a slow link.
    expect(server.node.requestTimeout).toBe(0);
  });

  it('malformed JSON on a JSON route is 400', async () => {
    for (const body of ['{"store":', '[1,2', '{"store": "files",}', '\u0000', 'null', '[]']) {
      const response = await rawRequest(base, '/v1/maintenance/cleanup', { method: 'POST', body, headers: { 'Content-Type': 'application/json' } });
      expect(response.status, body).toBe(400);
      expect(json(response).error.code, body).toBe('BAD_REQUEST');
    }
  });

  it('a malformed or unsatisfiable bytes Range is 416 with the size; several ranges or another unit get it whole; a good one is 206', async () => {
    await rawRequest(base, objectPath('ranged?wait=true'), { method: 'PUT', body: '0123456789' });
    for (const range of ['bytes=5-2', 'bytes=10-', 'bytes=-0', 'bytes=a-b', `bytes=${'9'.repeat(400)}-`]) {
      const response = await rawRequest(base, objectPath('ranged'), { headers: { Range: range } });
      expect(response.status, range).toBe(416);
      expect(response.headers['content-range'], range).toBe('bytes */10');
    }
    // RFC 9110 §14.2: a server may ignore Range, and must ignore a unit it does not know.
    for (const range of ['bytes=0-1,3-4', 'items=0-1']) {
      const response = await rawRequest(base, objectPath('ranged'), { headers: { Range: range } });
      expect(response.status, range).toBe(200);
      expect(response.body.toString(), range).toBe('0123456789');
    }
    const good = await rawRequest(base, objectPath('ranged'), { headers: { Range: 'bytes=2-4' } });
    expect(good.status).toBe(206);
    expect(good.body.toString()).toBe('234');
  });

  it('a header past the server limit is 431 and the server keeps answering', async () => {
    const response = await rawRequest(base, objectPath('huge/header'), { method: 'PUT', body: 'x', headers: { 'X-Meta-big': 'v'.repeat(20 * 1024) } });
    expect(response.status).toBe(431);
    // Answered by Node's parser before the app: as a JSON error a page of any origin can read, not a bare status line.
    expect(json(response).error).toMatchObject({ code: 'HEADERS_TOO_LARGE', message: expect.stringContaining('larger than 16384 bytes') });
    expect(response.headers['access-control-allow-origin']).toBe('*');
    expect(response.headers['x-request-id']).toBeTruthy();
    expect((await rawRequest(base, '/health')).status).toBe(200);
    await absent('huge/header');
  });

  it('a request line with raw bytes outside ASCII is a JSON 400 from the parser, saying to percent-encode', async () => {
    const response = await rawRequest(base, `${objectPath('raw')}/caf\u00e9`);
    expect(response.status).toBe(400);
    expect(json(response).error).toMatchObject({ code: 'BAD_REQUEST', message: expect.stringContaining('must be percent-encoded') });
    // A HEAD's answer has no body: one sent would be read as the start of the next answer.
    const head = await rawRequest(base, `${objectPath('raw')}/caf\u00e9`, { method: 'HEAD' });
    expect(head.status).toBe(400);
    expect(head.body.length).toBe(0);
    expect((await rawRequest(base, '/health')).status).toBe(200);
  });

  it('metadata or a content type over the providers’ limits is 400 at once, not a 202 for a job that must fail', async () => {
    const before = await service.deps.queues.queue('objects').getJobCounts('completed', 'failed', 'waiting', 'active');
    const cases: [string, Record<string, string>][] = [
      ['metadata over 2 KiB', { 'X-Meta-big': 'v'.repeat(3 * 1024) }],
      ['bad metadata name', { 'X-Meta-bad.name': 'v' }],
      ['content type over 256 characters', { 'Content-Type': `text/${'x'.repeat(300)}` }],
    ];
    for (const [name, headers] of cases) {
      const response = await rawRequest(base, objectPath('meta/refused'), { method: 'PUT', body: 'x', headers });
      expect(response.status, name).toBe(400);
      expect(json(response).error.code, name).toBe('INVALID_ARGUMENT');
      const version = await rawRequest(base, objectPath('meta/refused/versions'), { method: 'POST', body: 'x', headers });
      expect(version.status, `${name} (version)`).toBe(400);
    }
    expect(await service.deps.queues.queue('objects').getJobCounts('completed', 'failed', 'waiting', 'active')).toEqual(before);
    await absent('meta/refused');
  });
});
