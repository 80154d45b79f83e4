/**
 * `/v1/signed/:store/<key>?method=&expires=&signature=`: the URLs `GET .../url` hands out for stores without
 * native presigning. The signature is the credential (no bearer token); a missing, tampered or expired one is 401.
 */
import { Hono, type Context } from 'hono';
import type { AppDeps } from '../app.js';
import { ApiError } from '../errors.js';
import { parseObjectPath, rawPathname, rawSegmentsFrom } from '../object-path.js';
import type { SignedMethod } from '../signing.js';
import { requireStore } from '../stores.js';
import { respondWithJob, stageRequestBody } from '../submit.js';
import { objectGet, requestWriteOptions } from './objects.js';

function verified(c: Context, deps: AppDeps, method: SignedMethod): { store: string; key: string } {
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
  if (refusal !== undefined) throw new ApiError('UNAUTHORIZED', refusal);
  requireStore(deps, store);
  return { store, key: key! };
}

export function signedRoutes(deps: AppDeps): Hono {
  const app = new Hono();
  app.get('/:store/*', async (c) => {
    const { store, key } = verified(c, deps, 'GET');
    return objectGet(c, requireStore(deps, store), key);
  });
  app.put('/:store/*', async (c) => {
    const { store, key } = verified(c, deps, 'PUT');
    // The URL grants this write: its Content-Type, X-Meta-* and conditions count as on an authenticated PUT.
    const options = requestWriteOptions(c);
    const body = await stageRequestBody(c, deps);
    return respondWithJob(c, deps, 'write', { store, key, body, ...options });
  });
  app.all('/:store/*', (c) => {
    throw new ApiError('METHOD_NOT_ALLOWED', `${c.req.method} is not a method of a signed URL`, { Allow: 'GET, HEAD, PUT' });
  });
  return app;
}
