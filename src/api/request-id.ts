/**
 * Request ids: the client's `X-Request-Id` when it is a plausible id, else a new UUID; kept in `c.get('requestId')`
 * for logs and error answers, and sent back in the `X-Request-Id` response header.
 */
import { randomUUID } from 'node:crypto';
import type { Context } from 'hono';
import { outgoingOf, requestHeader } from './node-request.js';

const CLIENT_ID = /^[\w\-=]{1,255}$/;

/**
 * Picks the request's id and puts it on Node's response, where it is merged into whatever the request is answered
 * with. Outside Node (`app.request()`) there is no such response: call `echoRequestId` once the answer exists.
 */
export function assignRequestId(c: Context): string {
  const offered = requestHeader(c, 'x-request-id');
  const id = offered !== undefined && CLIENT_ID.test(offered) ? offered : randomUUID();
  c.set('requestId', id);
  outgoingOf(c)?.setHeader('X-Request-Id', id);
  return id;
}

export function echoRequestId(c: Context, id: string): void {
  if (outgoingOf(c) === undefined) c.header('X-Request-Id', id);
}

declare module 'hono' {
  interface ContextVariableMap {
    requestId: string;
  }
}
