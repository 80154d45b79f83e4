/**
 * Every request's way in and out of the API: its request id; what a browser may not do (below); for `/v1/*`, the
 * bearer token (signed URLs carry their own credential) and a raw path that routing and key parsing read alike; on
 * the way out, the duration metric and one pino line. One middleware rather than four: each Hono middleware level
 * costs a dispatch closure and promises per request, which on the enqueue path added up to more than any of these
 * steps.
 */
import type { Context, MiddlewareHandler } from 'hono';
import type { AppDeps } from './app.js';
import { bearerRefusal, type TokenSet } from './auth.js';
import { corsHeaders, preflightAnswer, type CorsPolicy } from './cors.js';
import { ApiError, respondWithError } from './errors.js';
import { echoAnswerHeader, requestHeader, setAnswerHeader } from './node-request.js';
import { pathAmbiguity, queryEncodingError, rawPathname } from './object-path.js';
import { assignRequestId, echoRequestId } from './request-id.js';
import { requestHost, requestOrigin } from './request-origin.js';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
const LOOPBACK_HOST = /^(?:localhost|127\.0\.0\.1|\[::1\])(?::\d{1,5})?$/i;

/**
 * Without API_TOKENS the API serves whoever reaches it, and `main` binds it to loopback only. A web page can still
 * reach it through the visitor's browser by pointing a name of its own at 127.0.0.1 (DNS rebinding), and then read
 * and write as a same-origin page; such requests carry that name as Host, so only loopback names are served.
 */
function hostRefusal(c: Context, tokens: TokenSet): Response | undefined {
  if (tokens.enabled) return undefined;
  const host = requestHost(c);
  if (LOOPBACK_HOST.test(host)) return undefined;
  const message = `API_TOKENS is not set: only loopback Host names are served (localhost, 127.0.0.1, [::1]), not ${host.slice(0, 256)}`;
  return respondWithError(c, new ApiError('FORBIDDEN', message));
}

/**
 * Whether `origin` is the request's own: scheme, host and port as the client addressed the API (the Host header;
 * the scheme a TLS-terminating proxy names in X-Forwarded-Proto, which a cross-site page cannot set without a
 * preflight this API never grants).
 */
function isOwnOrigin(c: Context, origin: string): boolean {
  try {
    const own = new URL(requestOrigin(c));
    const sent = new URL(origin);
    return sent.protocol === own.protocol && sent.host === own.host;
  } catch {
    return false; // `Origin: null` (a sandboxed frame, a file) or garbage: not ours
  }
}

/**
 * A page on another site can make the browser send a POST, PUT or DELETE whose answer it cannot read: a form, or a
 * `fetch` with a text/plain body, needs no CORS preflight, and the browser adds the board's cached basic credentials.
 * Browsers name the sender in Sec-Fetch-Site and Origin; a request with neither (curl, SDKs, servers) is not a
 * browser's and passes. Signed URLs are exempt: they are credentials handed to other sites on purpose (a page
 * uploading to a presigned URL).
 */
function crossSiteRefusal(c: Context, path: string): Response | undefined {
  if (SAFE_METHODS.has(c.req.method) || path.startsWith('/v1/signed/')) return undefined;
  const origin = requestHeader(c, 'origin');
  if (requestHeader(c, 'sec-fetch-site') !== 'cross-site' && (origin === undefined || isOwnOrigin(c, origin))) return undefined;
  return respondWithError(c, new ApiError('FORBIDDEN', 'a request from another site (Origin, Sec-Fetch-Site) may not change anything here'));
}

/**
 * The answer for a request that may not reach its route (or needs none: a CORS preflight), or `undefined` when it
 * may. `allowOrigin` is set for a browser's request from an origin CORS allows here: trusted to change things.
 */
function refusal(c: Context, path: string, tokens: TokenSet, allowOrigin: string | undefined): Response | undefined {
  const browserAnswer =
    hostRefusal(c, tokens) ?? (allowOrigin === undefined ? crossSiteRefusal(c, path) : preflightAnswer(c, path, allowOrigin));
  if (browserAnswer !== undefined) return browserAnswer;
  if (!path.startsWith('/v1/')) return undefined;
  if (!path.startsWith('/v1/signed/')) {
    const refused = bearerRefusal(c, tokens);
    if (refused !== undefined) return refused;
  }
  const ambiguity = pathAmbiguity(rawPathname(c)) ?? queryEncodingError(c);
  return ambiguity === undefined ? undefined : respondWithError(c, ambiguity);
}

export function gate(deps: Pick<AppDeps, 'metrics' | 'log'>, tokens: TokenSet, cors: CorsPolicy): MiddlewareHandler {
  return async (c, next) => {
    const started = performance.now();
    const requestId = assignRequestId(c);
    const path = c.req.path;
    const origin = requestHeader(c, 'origin');
    const allowOrigin = origin === undefined ? undefined : cors.allowOrigin(path, origin);
    const crossOrigin = allowOrigin === undefined ? undefined : corsHeaders(allowOrigin);
    if (crossOrigin !== undefined) for (const [name, value] of crossOrigin) setAnswerHeader(c, name, value);
    const refused = refusal(c, path, tokens, allowOrigin);
    if (refused === undefined) await next();
    else c.res = refused;
    echoRequestId(c, requestId);
    if (crossOrigin !== undefined) for (const [name, value] of crossOrigin) echoAnswerHeader(c, name, value);
    const seconds = (performance.now() - started) / 1000;
    deps.metrics.observeRequest(c.req.method, c.req.routePath, c.res.status, seconds);
    deps.log.info({ requestId, method: c.req.method, path: path.slice(0, 256), status: c.res.status, ms: Math.round(seconds * 1000) }, 'request');
  };
}
