/**
 * The origin a client addressed the API by: the Host header, and the scheme a TLS-terminating proxy names in
 * X-Forwarded-Proto (`http` or `https`; anything else is ignored), else the one the request arrived with. The gate
 * compares browsers' Origin with it; URLs the API hands out (signed URLs) are built on it.
 */
import type { Context } from 'hono';
import { ApiError } from './errors.js';
import { incomingOf, requestHeader } from './node-request.js';

/**
 * The Host header; without one (HTTP/1.0) or with an empty one, the address and port the request came in on — the
 * URL Node gives such a request has the listening name without its port.
 */
export function requestHost(c: Context): string {
  const header = requestHeader(c, 'host')?.trim();
  if (header) return header;
  const socket = incomingOf(c)?.socket;
  if (socket?.localAddress !== undefined && socket.localPort !== undefined) {
    return `${socket.localAddress.includes(':') ? `[${socket.localAddress}]` : socket.localAddress}:${socket.localPort}`;
  }
  return new URL(c.req.url).host;
}

/** `path` on the origin the client addressed: 400 when its Host names nothing a URL can be built on. */
export function urlOnRequestOrigin(c: Context, path: string): URL {
  try {
    return new URL(path, requestOrigin(c));
  } catch {
    throw new ApiError('BAD_REQUEST', `the Host header names no host to build a URL on: ${JSON.stringify(requestHost(c).slice(0, 256))}`);
  }
}

export function requestScheme(c: Context): string {
  const forwarded = requestHeader(c, 'x-forwarded-proto')?.split(',')[0]?.trim().toLowerCase();
  return forwarded === 'http' || forwarded === 'https' ? forwarded : new URL(c.req.url).protocol.slice(0, -1);
}

export function requestOrigin(c: Context): string {
  return `${requestScheme(c)}://${requestHost(c)}`;
}
