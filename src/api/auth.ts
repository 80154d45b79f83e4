/**
 * Bearer tokens from `API_TOKENS` on `/v1/*`; HTTP basic auth on the board (any user name, a token as password),
 * because a browser can send basic credentials but not a bearer header. Tokens are compared as sha256 digests
 * with `timingSafeEqual`: constant time whatever the length of the guess, so timing tells nothing about a token.
 */
import { hash, timingSafeEqual } from 'node:crypto';
import type { Context, MiddlewareHandler } from 'hono';
import { ApiError, respondWithError } from './errors.js';
import { requestHeader } from './node-request.js';

export class TokenSet {
  private readonly digests: Buffer[];

  constructor(tokens: readonly string[]) {
    this.digests = tokens.map(digest);
  }

  get enabled(): boolean {
    return this.digests.length > 0;
  }

  accepts(candidate: string | undefined): boolean {
    if (candidate === undefined || candidate === '') return false;
    const guess = digest(candidate);
    let accepted = false;
    for (const known of this.digests) accepted = timingSafeEqual(known, guess) || accepted; // no early exit
    return accepted;
  }
}

function digest(token: string): Buffer {
  return hash('sha256', token, 'buffer');
}

function bearerToken(header: string | undefined): string | undefined {
  const match = header === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1];
}

function basicPassword(header: string | undefined): string | undefined {
  const match = header === undefined ? null : /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!match) return undefined;
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon < 0 ? undefined : decoded.slice(colon + 1);
}

/** Whether the request may see what a token grants: it carries a valid bearer token, or the API has none. */
export function hasBearer(c: Context, tokens: TokenSet): boolean {
  return !tokens.enabled || tokens.accepts(bearerToken(requestHeader(c, 'authorization')));
}

/**
 * The 401 for a request without a valid bearer token, or `undefined` when it may pass. Without tokens the API is
 * open (and `main` binds to loopback only).
 */
export function bearerRefusal(c: Context, tokens: TokenSet): Response | undefined {
  if (hasBearer(c, tokens)) return undefined;
  c.header('WWW-Authenticate', 'Bearer realm="kyozo"');
  return respondWithError(c, new ApiError('UNAUTHORIZED', 'a valid bearer token is required (Authorization: Bearer <token>)'));
}

export function requireBasic(tokens: TokenSet): MiddlewareHandler {
  return async (c, next) => {
    const authorization = requestHeader(c, 'authorization');
    const credential = basicPassword(authorization) ?? bearerToken(authorization);
    if (tokens.enabled && !tokens.accepts(credential)) {
      c.header('WWW-Authenticate', 'Basic realm="kyozo board", charset="UTF-8"');
      return respondWithError(c, new ApiError('UNAUTHORIZED', 'sign in with any user name and an API token as password'));
    }
    await next();
  };
}
