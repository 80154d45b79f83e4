/**
 * CORS: which pages on other origins may call the API from a browser and read its answers.
 *
 * - `/v1/signed/...`: every origin. A signed URL is a credential handed out on purpose, typically to a page that
 *   uploads to it; a browser's PUT needs a preflight, which this answers.
 * - the rest of `/v1`: the origins in `CORS_ORIGINS` (`*`: all, only with API_TOKENS). Such a page sends the bearer
 *   token in `Authorization` itself; the browser adds no cookies or cached credentials, so answers are never
 *   credentialed (no `Access-Control-Allow-Credentials`) and wildcards hold.
 * - the board and the rest: no origin. Its basic credentials are cached by the browser.
 *
 * A listed origin is also exempt from the API's refusal of cross-site changes (`gate.ts`): it is trusted by name.
 */
import type { Context } from 'hono';
import { requestHeader } from './node-request.js';

const API_METHODS = 'GET, HEAD, PUT, POST, DELETE';
const SIGNED_METHODS = 'GET, HEAD, PUT';
/** How long a browser may reuse a preflight's answer. */
const PREFLIGHT_MAX_AGE_SECONDS = '600';
/** A header list a preflight may ask for, echoed back: names only, and not without bound. */
const HEADER_NAMES = /^[!#$%&'*+.^`|~\w-]+(?:\s*,\s*[!#$%&'*+.^`|~\w-]+)*$/;
const MAX_REQUESTED_HEADERS_LENGTH = 2048;

export interface CorsPolicy {
  /** The `Access-Control-Allow-Origin` for a request from `origin` to `path`, or `undefined` when it gets none. */
  allowOrigin(path: string, origin: string): string | undefined;
}

export function corsPolicy(origins: readonly string[]): CorsPolicy {
  const anyOrigin = origins.includes('*');
  const listed = new Set(origins);
  return {
    allowOrigin(path, origin) {
      if (path.startsWith('/v1/signed/')) return '*';
      if (!path.startsWith('/v1/')) return undefined;
      if (anyOrigin) return '*';
      return listed.has(origin) ? origin : undefined;
    },
  };
}

/** The headers every answer to an allowed cross-origin request carries. */
export function corsHeaders(allowOrigin: string): [string, string][] {
  return [
    ['Access-Control-Allow-Origin', allowOrigin],
    // ETag, X-Kyozo-Version, X-Meta-*, Content-Range, Retry-After, X-Request-Id...: a page may read every header.
    ['Access-Control-Expose-Headers', '*'],
    // An answer that names one origin differs by origin: caches must keep them apart.
    ...(allowOrigin === '*' ? [] : [['Vary', 'Origin'] as [string, string]]),
  ];
}

/**
 * The answer to a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`) from an allowed origin, or
 * `undefined` for any other request. It asks no token: a browser sends none with a preflight.
 */
export function preflightAnswer(c: Context, path: string, allowOrigin: string): Response | undefined {
  if (c.req.method !== 'OPTIONS' || requestHeader(c, 'access-control-request-method') === undefined) return undefined;
  const requested = requestHeader(c, 'access-control-request-headers')?.trim();
  const headers: Record<string, string> = {
    ...Object.fromEntries(corsHeaders(allowOrigin)),
    'Access-Control-Allow-Methods': path.startsWith('/v1/signed/') ? SIGNED_METHODS : API_METHODS,
    'Access-Control-Max-Age': PREFLIGHT_MAX_AGE_SECONDS,
  };
  // The headers asked for are granted: the route reads what it knows and ignores the rest. `*` would not cover
  // Authorization, which a page calling /v1 always sends.
  if (requested && requested.length <= MAX_REQUESTED_HEADERS_LENGTH && HEADER_NAMES.test(requested)) {
    headers['Access-Control-Allow-Headers'] = requested;
  }
  // Chrome asks before a public page may reach a private address (the API on localhost or a LAN).
  if (requestHeader(c, 'access-control-request-private-network') === 'true') headers['Access-Control-Allow-Private-Network'] = 'true';
  return new Response(null, { status: 204, headers });
}
