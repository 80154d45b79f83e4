/**
 * `/v1/stores/:store/objects...`: reads straight from the provider; mutations staged and enqueued as jobs.
 * See `object-path.ts` for how a key and its sub-resources share the path.
 */
import { Readable } from 'node:stream';
import { Hono, type Context } from 'hono';
import { z } from 'zod';
import { NotSupportedError, ProviderUnavailableError } from '../../providers/errors.js';
import { authorSchema, ifMatchSchema, versionMessageSchema } from '../../jobs/definition.js';
import { validatePrefix } from '../../providers/keys.js';
import { listDelimited, MAX_DELIMITER_LENGTH } from '../../providers/list-delimited.js';
import { describeWrite } from '../../providers/metadata.js';
import type { Author, StorageProvider } from '../../providers/types.js';
import type { AppDeps } from '../app.js';
import { copyRequest } from '../copy-request.js';
import { ApiError } from '../errors.js';
import { decodeHeaderValue, HEADER_TEXT, ifRangeHolds, metadataFromHeaders, notModified, objectHeaders, parseIfMatch, parseRange } from '../http-object.js';
import { methodNotAllowed } from '../method-not-allowed.js';
import { requestHeader, requestHeaderEntries } from '../node-request.js';
import { parseObjectPath, rawPathname, rawSegmentsFrom, type ObjectTarget } from '../object-path.js';
import { urlOnRequestOrigin } from '../request-origin.js';
import { requireStore } from '../stores.js';
import { MAX_SIGNED_URL_SECONDS } from '../signing.js';
import { jobRequest, queryFlag, respondWithJob, singleQuery, stageRequestBody } from '../submit.js';

/** A query parameter that is a whole number from `min` to `max`, refused with one message whatever is wrong. */
function wholeNumber(min: number, max: number, unit = '') {
  const expected = `expected a whole number${unit === '' ? '' : ` of ${unit}`} from ${min} to ${max}`;
  // Digits only: `z.coerce.number` would take 0x10, 1e1, +5 and 5.0 too, which the message says are refused.
  return z
    .string({ error: expected })
    .regex(/^[0-9]{1,16}$/, expected)
    .transform(Number)
    .pipe(z.number().min(min, expected).max(max, expected));
}

const listQuery = z.object({
  prefix: z.string().optional(),
  cursor: z.string().optional(),
  limit: wholeNumber(1, 1000).optional(),
  delimiter: z.string().min(1, 'empty: leave it out').max(MAX_DELIMITER_LENGTH).optional(),
});
const versionsQuery = listQuery.omit({ prefix: true, delimiter: true });
const urlQuery = z.object({
  method: z.enum(['GET', 'PUT']).default('GET'),
  expires: wholeNumber(1, MAX_SIGNED_URL_SECONDS, 'seconds').default(3600),
});
const REVISION = 'a version id or a branch name';
const diffQuery = z.object({
  from: z.string({ error: `required: ${REVISION}` }).min(1, `required: ${REVISION}`),
  to: z.string().min(1, `empty: ${REVISION}, or leave it out`).optional(),
});

/** `Name <email>` or `Name`, in the `utf-8''` form or raw UTF-8 when it is not ASCII. */
export function parseAuthor(header: string | undefined): Author | undefined {
  if (header === undefined) return undefined;
  // Spaces around the parts are the header's layout, not the author's: a retry matches its version by author. Only
  // HTTP's own (space, tab): `trim()` and `\s` would also take a no-break space that belongs to the name.
  const value = decodeHeaderValue('X-Author', header).replace(/^[ \t]+|[ \t]+$/g, '');
  if (value === '') return undefined;
  const match = /^(.*?)[ \t]*<[ \t]*([^<>]*?)[ \t]*>$/.exec(value);
  const author = match ? { name: match[1]!, email: match[2]! } : { name: value };
  // Brackets anywhere else would end up in a name (git refuses those), or mean the header was cut.
  if (author.name === '' || /[<>]/.test(author.name)) throw new ApiError('BAD_REQUEST', 'X-Author must be "Name <email>" or "Name"');
  return checkedHeader('X-Author', authorSchema, author);
}

/**
 * Conditions a mutation cannot honour: refused, never ignored (a conditional delete would otherwise delete
 * whatever is there). Writes take If-Match and `If-None-Match: *` (`writeConditions`); deletes and restores none.
 */
const WRITE_UNSUPPORTED = ['if-unmodified-since'];
const UNCONDITIONAL_UNSUPPORTED = ['if-match', 'if-none-match', 'if-unmodified-since'];

function refuseUnsupportedConditions(c: Context, names: readonly string[]): void {
  const takes = names === WRITE_UNSUPPORTED ? 'it takes If-Match and If-None-Match: * only' : 'it takes no condition';
  for (const name of names) {
    if (requestHeader(c, name) !== undefined) throw new NotSupportedError(`this ${c.req.method} does not support ${name}: ${takes}`);
  }
}

/**
 * A header's value checked with the job's own rule for the field it becomes: a limit the job would enforce is a 400
 * before the body is read (under `Expect: 100-continue`, before it is sent), not after the whole upload.
 */
function checkedHeader<T>(name: string, schema: z.ZodType<T>, value: T): T {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  throw new ApiError('BAD_REQUEST', `${name}: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
}

/** If-Match as `ifMatch`; `If-None-Match: *` as `ifNoneMatch` (create-only). An etag list there has no meaning for a write. */
function writeConditions(c: Context): { ifMatch?: string | string[]; ifNoneMatch?: '*' } {
  const ifNoneMatch = requestHeader(c, 'if-none-match')?.trim();
  if (ifNoneMatch !== undefined && ifNoneMatch !== '*') throw new NotSupportedError('a write takes If-None-Match: * (create-only) only');
  const ifMatch = parseIfMatch(requestHeader(c, 'if-match'));
  return { ifMatch: ifMatch === undefined ? undefined : checkedHeader('If-Match', ifMatchSchema, ifMatch), ...(ifNoneMatch === '*' ? { ifNoneMatch } : {}) };
}

/**
 * A body in a content coding (`Content-Encoding: gzip`) would be stored as its coded bytes and read back without
 * the coding named, which no client could decode: refused (RFC 9110 §15.5.16), so the client sends the bytes it
 * wants stored, a compressed file as it is.
 */
function refuseContentCoding(c: Context): void {
  const coding = requestHeader(c, 'content-encoding')?.trim().toLowerCase();
  if (coding === undefined || coding === '' || coding === 'identity') return;
  throw new ApiError('UNSUPPORTED_MEDIA_TYPE', `Content-Encoding ${coding.slice(0, 64)} is not supported: objects are stored as sent; send them without a content coding`, {
    'Accept-Encoding': 'identity',
  });
}

/**
 * A transfer coding other than chunked (`Transfer-Encoding: gzip, chunked`): Node removes the chunking only, so the
 * coded bytes would be stored. 501, as RFC 9112 §6.1 has it for a coding the server does not apply.
 */
function refuseTransferCoding(c: Context): void {
  const codings = requestHeader(c, 'transfer-encoding');
  if (codings === undefined) return;
  const other = codings.split(',').map((coding) => coding.trim().toLowerCase()).find((coding) => coding !== 'chunked');
  if (other !== undefined) throw new NotSupportedError(`Transfer-Encoding ${other.slice(0, 64)} is not supported: send the body as it is, chunked or with a Content-Length`);
}

/**
 * Content-Type, `X-Meta-*`, If-Match and If-None-Match of a mutation, checked with the providers' own rules before
 * the body is staged: a bad one is a 400 now, not a 202 for a job that can only fail, and no staged body is left
 * behind. A Content-Type is ASCII (a media type is; a file name goes in `X-Meta-*`, which carries UTF-8).
 */
export function requestWriteOptions(c: Context): { contentType?: string; metadata: Record<string, string>; ifMatch?: string | string[]; ifNoneMatch?: '*' } {
  refuseUnsupportedConditions(c, WRITE_UNSUPPORTED);
  refuseContentCoding(c);
  refuseTransferCoding(c);
  const contentType = requestHeader(c, 'content-type');
  if (contentType !== undefined && !HEADER_TEXT.test(contentType)) {
    throw new ApiError('BAD_REQUEST', 'Content-Type must be printable ASCII; send text such as a file name in an X-Meta-* header');
  }
  const metadata = metadataFromHeaders(requestHeaderEntries(c));
  describeWrite({ contentType, metadata });
  return { contentType, metadata, ...writeConditions(c) };
}

/** Everything after `/v1/stores/<store>/objects/`, by position: a store may itself be named `objects`. */
function rawObjectPath(c: Context): string {
  return rawSegmentsFrom(rawPathname(c), 5);
}

function target(c: Context): ObjectTarget {
  return parseObjectPath(rawObjectPath(c));
}

/** GET and HEAD of an object (also behind signed URLs): conditional, ranged, streamed. */
export async function objectGet(c: Context, provider: StorageProvider, key: string, versionId?: string): Promise<Response> {
  const header = (name: string) => requestHeader(c, name);
  const info = await provider.stat(key, { versionId });
  const headers = objectHeaders(info);
  if (notModified(header, key, info)) return c.body(null, 304, headers);
  // Range is defined for GET only (RFC 9110 §14.2): HEAD answers as a GET without it would.
  if (c.req.method === 'HEAD') return c.body(null, 200, { ...headers, 'Content-Length': String(info.size) });
  let range = provider.capabilities.rangeReads && ifRangeHolds(header('if-range'), info.etag) ? parseRange(header('range'), info.size) : undefined;
  let { info: served, body } = await provider.read(key, { versionId, range });
  if (served.etag !== info.etag) {
    // Replaced between stat and read: the preconditions and the range were judged on the old object. The new one is
    // judged again and sent whole (a server may ignore Range): what is answered is always what was judged.
    body.destroy();
    ({ info: served, body } = await provider.read(key, { versionId }));
    range = undefined;
    let unchanged: boolean;
    try {
      unchanged = notModified(header, key, served);
    } catch (error) {
      body.destroy();
      throw error;
    }
    if (unchanged) {
      body.destroy();
      return c.body(null, 304, objectHeaders(served));
    }
  }
  // Another tier may have answered than the one stat asked: describe what is actually sent.
  const sentHeaders = objectHeaders(served);
  const stream = Readable.toWeb(body) as ReadableStream<Uint8Array>;
  if (range === undefined) return c.body(stream, 200, { ...sentHeaders, 'Content-Length': String(served.size) });
  return c.body(stream, 206, {
    ...sentHeaders,
    'Content-Length': String(range[1] - range[0] + 1),
    'Content-Range': `bytes ${range[0]}-${range[1]}/${served.size}`,
  });
}

/**
 * A restore of a version the store does not have is 404 now, not a 202 for a job that can only fail. A store that
 * cannot answer does not refuse the restore: the job waits for it, as writes do.
 */
async function requireVersion(provider: StorageProvider, key: string, versionId: string): Promise<void> {
  await provider.stat(key, { versionId }).catch((error: unknown) => {
    if (!(error instanceof ProviderUnavailableError)) throw error;
  });
}

/** What each path under `objects` is, and the methods it answers (the `Allow` of a 405). */
const RESOURCES: Record<ObjectTarget['kind'], { name: string; allow: string }> = {
  list: { name: 'the object list', allow: 'GET, HEAD, DELETE' },
  object: { name: 'an object', allow: 'GET, HEAD, PUT, DELETE' },
  versions: { name: '.../versions', allow: 'GET, HEAD, POST' },
  restore: { name: '.../versions/:id/restore', allow: 'POST' },
  diff: { name: '.../diff', allow: 'GET, HEAD' },
  url: { name: '.../url', allow: 'GET, HEAD' },
};

function notAMethodOf(method: string, at: ObjectTarget): ApiError {
  const { name, allow } = RESOURCES[at.kind];
  return methodNotAllowed(method, name, allow);
}

/** `DELETE .../objects?prefix=`: a `delete-prefix` job for every object under a prefix, which must be given. */
async function deleteUnderPrefix(c: Context, deps: AppDeps): Promise<Response> {
  const store = c.req.param('store')!;
  requireStore(deps, store);
  refuseUnsupportedConditions(c, UNCONDITIONAL_UNSUPPORTED);
  const prefix = singleQuery(c, 'prefix');
  if (!prefix) throw new ApiError('BAD_REQUEST', 'DELETE of the object list deletes the objects under ?prefix=, which is required (never a whole store)');
  validatePrefix(prefix);
  const request = jobRequest(c);
  const allVersions = queryFlag(c, 'allVersions');
  return respondWithJob(c, deps, request, 'delete-prefix', { store, prefix, ...(allVersions ? { allVersions } : {}) });
}

async function listObjects(c: Context, provider: StorageProvider): Promise<Response> {
  const { delimiter, ...query } = listQuery.parse(c.req.query());
  const opts = { ...query, prefix: validatePrefix(query.prefix) };
  return c.json(delimiter === undefined ? await provider.list(opts) : await listDelimited(provider, { ...opts, delimiter }));
}

export function objectRoutes(deps: AppDeps): Hono {
  const app = new Hono();
  app.get('/:store/objects', async (c) => listObjects(c, requireStore(deps, c.req.param('store'))));

  app.get('/:store/objects/*', async (c) => {
    const provider = requireStore(deps, c.req.param('store'));
    const at = target(c);
    switch (at.kind) {
      case 'list': // `.../objects/`
        return listObjects(c, provider);
      case 'object':
        return objectGet(c, provider, at.key, c.req.query('version') || undefined);
      case 'versions':
        return c.json(await provider.listVersions(at.key, versionsQuery.parse(c.req.query())));
      case 'diff': {
        const diff = (provider as { diff?: (key: string, from: string, to?: string) => Promise<unknown> }).diff;
        if (!provider.capabilities.diff || diff === undefined) throw new NotSupportedError(`store "${c.req.param('store')}" (${provider.kind}) has no diff`);
        const { from, to } = diffQuery.parse(c.req.query());
        return c.json(await diff.call(provider, at.key, from, to));
      }
      case 'url': {
        const { method, expires } = urlQuery.parse(c.req.query());
        // Whole seconds, as both kinds of URL count them: the URL stops working exactly at expiresAt.
        const expiresAt = new Date((Math.floor(Date.now() / 1000) + expires) * 1000);
        if (provider.capabilities.presign === 'native' && provider.presign) {
          return c.json({ url: await provider.presign(at.key, { method, expiresIn: expires }), expiresAt: expiresAt.toISOString() });
        }
        await provider.stat(at.key).catch((error: unknown) => {
          if (method === 'GET') throw error; // a GET URL for nothing would only ever answer 404
        });
        const path = deps.signer.sign({ method, store: c.req.param('store'), key: at.key, expires: expiresAt.getTime() / 1000 });
        // On the origin the client used: behind a TLS-terminating proxy, an https URL (this one is a credential).
        return c.json({ url: urlOnRequestOrigin(c, path).toString(), expiresAt: expiresAt.toISOString() });
      }
      case 'restore':
        throw notAMethodOf(c.req.method, at);
    }
  });

  app.put('/:store/objects/*', async (c) => {
    const store = c.req.param('store');
    const provider = requireStore(deps, store);
    const at = target(c);
    if (at.kind !== 'object') throw notAMethodOf(c.req.method, at);
    const options = requestWriteOptions(c);
    const request = jobRequest(c);
    const source = requestHeader(c, 'x-copy-source');
    if (source === undefined && requestHeader(c, 'x-copy-source-version') !== undefined) {
      throw new ApiError('BAD_REQUEST', 'X-Copy-Source-Version names a version of the X-Copy-Source, which is missing');
    }
    if (source !== undefined) {
      const { payload, fingerprint } = await copyRequest(c, deps, request, { store, key: at.key, provider }, source, options);
      return respondWithJob(c, deps, request, 'copy', payload, { fingerprint });
    }
    const body = await stageRequestBody(c, deps, provider);
    return respondWithJob(c, deps, request, 'write', { store, key: at.key, body, ...options });
  });

  app.delete('/:store/objects', async (c) => deleteUnderPrefix(c, deps));

  app.delete('/:store/objects/*', async (c) => {
    const store = c.req.param('store');
    requireStore(deps, store);
    const at = target(c);
    if (at.kind === 'list') return deleteUnderPrefix(c, deps); // `.../objects/`
    if (at.kind !== 'object') throw notAMethodOf(c.req.method, at);
    refuseUnsupportedConditions(c, UNCONDITIONAL_UNSUPPORTED);
    const request = jobRequest(c);
    const allVersions = queryFlag(c, 'allVersions');
    return respondWithJob(c, deps, request, 'delete', { store, key: at.key, ...(allVersions ? { allVersions } : {}) });
  });

  app.post('/:store/objects/*', async (c) => {
    const store = c.req.param('store');
    const provider = requireStore(deps, store);
    const at = target(c);
    const messageHeader = requestHeader(c, 'x-version-message');
    const decoded = messageHeader === undefined ? undefined : decodeHeaderValue('X-Version-Message', messageHeader);
    const message = decoded ? checkedHeader('X-Version-Message', versionMessageSchema, decoded) : decoded;
    const author = parseAuthor(requestHeader(c, 'x-author'));
    if (at.kind === 'versions') {
      const options = requestWriteOptions(c);
      const request = jobRequest(c);
      const body = await stageRequestBody(c, deps, provider);
      return respondWithJob(c, deps, request, 'version', {
        store,
        key: at.key,
        body,
        message: message || `version of ${at.key}`,
        ...(author ? { author } : {}),
        ...options,
      });
    }
    if (at.kind === 'restore') {
      refuseUnsupportedConditions(c, UNCONDITIONAL_UNSUPPORTED);
      const request = jobRequest(c);
      const payload = { store, key: at.key, versionId: at.versionId, ...(message ? { message } : {}), ...(author ? { author } : {}) };
      // A repeat under its Idempotency-Key is answered with its job even once the version is gone (as a copy's is).
      if ((await deps.queues.madeBefore('restore', payload, request)) === undefined) await requireVersion(provider, at.key, at.versionId);
      return respondWithJob(c, deps, request, 'restore', payload);
    }
    throw notAMethodOf(c.req.method, at);
  });

  // PATCH, OPTIONS...: registered last, so reached only by a method none of the routes above takes.
  app.all('/:store/objects/*', (c) => {
    requireStore(deps, c.req.param('store'));
    throw notAMethodOf(c.req.method, target(c));
  });

  return app;
}
