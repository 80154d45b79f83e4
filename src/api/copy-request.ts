/**
 * A PUT with `X-Copy-Source: <store>/<key>` (and `X-Copy-Source-Version: <id>` for an older version) copies that
 * object instead of taking a body: the `copy` job (`jobs/copy-object.ts`). What is copied is pinned here, when the
 * request is accepted: the source's etag, and its Content-Type and metadata unless the request names its own (a
 * Content-Type replaces the source's; any `X-Meta-*` replaces all of its metadata). A source that does not exist is
 * 404 now, not a job that can only fail. A `Content-Digest` / `Repr-Digest` is checked against the pinned etag (the
 * source's sha-256), which the job holds the copy to: a mismatch is 400 `BAD_DIGEST` with no job, and a source that
 * changes in between fails the job (412) rather than being copied unchecked.
 *
 * Under an Idempotency-Key the request is what it said (source, version, target and its headers), not what was
 * pinned: a repeat finds the first job even after the source changed or went, and is answered with it.
 */
import type { Context } from 'hono';
import type { PayloadOf } from '../jobs/index.js';
import { jobIdFor } from '../jobs/job-id.js';
import { PayloadTooLargeError } from '../providers/errors.js';
import type { StorageProvider } from '../providers/types.js';
import type { AppDeps } from './app.js';
import { checkDigests, requestedDigests } from './content-digest.js';
import { ApiError } from './errors.js';
import { decodeHeaderValue, PRINTABLE_ASCII } from './http-object.js';
import { requestHeader, requestHeaderCount } from './node-request.js';
import { parseCopySource } from './object-path.js';
import { requireStore } from './stores.js';
import { digestTrailers, hasBody, type JobRequest } from './submit.js';

type CopyPayload = PayloadOf<'copy'>;

/** The copy job for a PUT of `target` naming `source` (`X-Copy-Source`), and what makes a repeat of it the same. */
export async function copyRequest(
  c: Context,
  deps: Pick<AppDeps, 'stores' | 'queues'>,
  request: JobRequest,
  target: { store: string; key: string; provider: StorageProvider },
  source: string,
  options: { contentType?: string; metadata: Record<string, string>; ifMatch?: string | string[]; ifNoneMatch?: '*' },
): Promise<{ payload: CopyPayload; fingerprint: unknown }> {
  if (hasBody(c)) throw new ApiError('BAD_REQUEST', 'a PUT with X-Copy-Source copies that object: it takes no body');
  for (const name of ['X-Copy-Source', 'X-Copy-Source-Version']) {
    // Node joins repeated headers with ', ', which a key may hold: two sources would read as one.
    if (requestHeaderCount(c, name.toLowerCase()) > 1) throw new ApiError('BAD_REQUEST', `${name} is sent once: a copy has one source`);
  }
  // A copy has no body, so no trailers: a digest announced for them is refused there.
  const digests = [...requestedDigests((name) => requestHeader(c, name)), ...digestTrailers(c)];
  // Percent-encoded as a path is (raw UTF-8 bytes are read as UTF-8 too), so not decoded as an `utf-8''` header text.
  const from = parseCopySource(PRINTABLE_ASCII.test(source) ? source : decodeHeaderValue('X-Copy-Source', source));
  const versionHeader = requestHeader(c, 'x-copy-source-version');
  const versionId = versionHeader === undefined ? undefined : decodeHeaderValue('X-Copy-Source-Version', versionHeader).trim() || undefined;
  const asked = { ...from, ...(versionId === undefined ? {} : { versionId }) };
  const fingerprint = { store: target.store, key: target.key, source: asked, ...options };
  if (request.idempotencyKey !== undefined) {
    const first = await deps.queues.getJob(jobIdFor('objects', 'copy', undefined, request.idempotencyKey, fingerprint));
    if (first !== undefined) {
      const payload = first.data as CopyPayload;
      checkDigests(digests, payload.source.etag, 'the copy source');
      return { payload, fingerprint };
    }
  }
  const info = await requireStore(deps, from.store).stat(from.key, { versionId });
  checkDigests(digests, info.etag, 'the copy source');
  const limit = target.provider.capabilities.maxObjectBytes;
  if (limit !== undefined && info.size > limit) {
    throw new PayloadTooLargeError(`the copy source is ${info.size} bytes, more than store "${target.store}" takes (${limit} bytes)`);
  }
  const { contentType, metadata, ifMatch, ifNoneMatch } = options;
  const payload: CopyPayload = {
    store: target.store,
    key: target.key,
    source: { ...asked, etag: info.etag },
    contentType: contentType ?? info.contentType,
    metadata: Object.keys(metadata).length > 0 ? metadata : info.metadata,
    ...(ifMatch === undefined ? {} : { ifMatch }),
    ...(ifNoneMatch === undefined ? {} : { ifNoneMatch }),
  };
  return { payload, fingerprint };
}
