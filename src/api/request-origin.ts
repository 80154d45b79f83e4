/**
 * The origin a client addressed the API by: the Host header, and the scheme a TLS-terminating proxy names in
 * X-Forwarded-Proto (`http` or `https`; anything else is ignored), else the one the request arrived with. The gate
 * compares browsers' Origin with it; URLs the API hands out (signed URLs) are built on it.
 */
import type { Context } from 'hono';
import { requestHeader } from './node-request.js';

export function requestHost(c: Context): string {
  return requestHeader(c, 'host') ?? new URL(c.req.url).host;
}

export function requestScheme(c: Context): string {
  const forwarded = requestHeader(c, 'x-forwarded-proto')?.split(',')[0]?.trim().toLowerCase();
  return forwarded === 'http' || forwarded === 'https' ? forwarded : new URL(c.req.url).protocol.slice(0, -1);
}

export function requestOrigin(c: Context): string {
  return `${requestScheme(c)}://${requestHost(c)}`;
}
