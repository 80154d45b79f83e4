/**
 * Every request's way in and out of the API: its request id; for `/v1/*`, the bearer token (signed URLs carry their
 * own credential) and a raw path that routing and key parsing read alike; on the way out, the duration metric and
 * one pino line. One middleware rather than four: each Hono middleware level costs a dispatch closure and promises
 * per request, which on the enqueue path added up to more than any of these steps.
 */
import type { Context, MiddlewareHandler } from 'hono';
import type { AppDeps } from './app.js';
import { bearerRefusal, type TokenSet } from './auth.js';
import { respondWithError } from './errors.js';
import { pathAmbiguity, rawPathname } from './object-path.js';
import { assignRequestId, echoRequestId } from './request-id.js';

/** The answer for a `/v1/*` request that may not reach its route, or `undefined` when it may. */
function refusal(c: Context, path: string, tokens: TokenSet): Response | undefined {
  if (!path.startsWith('/v1/')) return undefined;
  if (!path.startsWith('/v1/signed/')) {
    const refused = bearerRefusal(c, tokens);
    if (refused !== undefined) return refused;
  }
  const ambiguity = pathAmbiguity(rawPathname(c));
  return ambiguity === undefined ? undefined : respondWithError(c, ambiguity);
}

export function gate(deps: Pick<AppDeps, 'metrics' | 'log'>, tokens: TokenSet): MiddlewareHandler {
  return async (c, next) => {
    const started = performance.now();
    const requestId = assignRequestId(c);
    const path = c.req.path;
    const refused = refusal(c, path, tokens);
    if (refused === undefined) await next();
    else c.res = refused;
    echoRequestId(c, requestId);
    const seconds = (performance.now() - started) / 1000;
    deps.metrics.observeRequest(c.req.method, c.req.routePath, c.res.status, seconds);
    deps.log.info({ requestId, method: c.req.method, path: path.slice(0, 256), status: c.res.status, ms: Math.round(seconds * 1000) }, 'request');
  };
}
