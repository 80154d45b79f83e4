/**
 * `/v1/signed/:store/<key>?method=&expires=&signature=`: the URLs `GET .../url` hands out for stores without
 * native presigning. The signature is the credential (no bearer token); a missing, tampered or expired one, or one
 * for another method or key, is 403 as on S3: 401 would have to name an authentication scheme to retry with
 * (`WWW-Authenticate`, RFC 9110 §15.5.2), and there is none, only a new URL.
 */
import { Hono, type Context } from 'hono';
import type { StorageProvider } from '../../providers/types.js';
import type { AppDeps } from '../app.js';
import { ApiError } from '../errors.js';
import { refuseOtherMethods } from '../method-not-allowed.js';
import { requestHeader } from '../node-request.js';
import { parseObjectPath, rawPathname, rawSegmentsFrom } from '../object-path.js';
import type { SignedMethod } from '../signing.js';
import { requireStore } from '../stores.js';
import { jobRequest, respondWithJob, stageRequestBody } from '../submit.js';
import { objectGet, requestWriteOptions } from './objects.js';

function verified(c: Context, deps: AppDeps, method: SignedMethod): { store: string; key: string; provider: StorageProvider } {
  const store = c.req.param('store')!;
  // `/v1/signed/<store>/<key path>`, by position: the store segment may be spelled percent-encoded.
  const rawKey = rawSegmentsFrom(rawPathname(c), 4);
  const target = parseObjectPath(rawKey);
  const key = target.kind === 'object' ? target.key : undefined;
  const expires = Number(c.req.query('expires'));
  const refusal =
    key === undefined || c.req.query('method') !== method || !Number.isInteger(expires)
      ? 'not a signed URL for this method'
      : deps.signer.refusal({ method, store, key, expires }, c.req.query('signature'));
  if (refusal !== undefined) throw new ApiError('FORBIDDEN', refusal);
  return { store, key: key!, provider: requireStore(deps, store) };
}

export function signedRoutes(deps: AppDeps): Hono {
  const app = new Hono();
  app.get('/:store/*', async (c) => {
    const { store, key } = verified(c, deps, 'GET');
    // Whoever held the PUT URL chose the content and its type: a browser opening the URL saves it, never renders it.
    const response = await objectGet(c, requireStore(deps, store), key);
    response.headers.set('Content-Disposition', 'attachment');
    return response;
  });
  app.put('/:store/*', async (c) => {
    const { store, key, provider } = verified(c, deps, 'PUT');
    // The URL grants writing what it is sent: a copy would read another object with the URL's grant alone.
    if (requestHeader(c, 'x-copy-source') !== undefined) throw new ApiError('BAD_REQUEST', 'a signed PUT URL writes the body it is sent; copy with X-Copy-Source and a bearer token');
    // The URL grants this write: its Content-Type, X-Meta-* and conditions count as on an authenticated PUT.
    const options = requestWriteOptions(c);
    const request = jobRequest(c);
    const body = await stageRequestBody(c, deps, provider);
    return respondWithJob(c, deps, request, 'write', { store, key, body, ...options });
  });
  return refuseOtherMethods(app);
}
