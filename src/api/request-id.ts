/**
 * Request ids: the client's `X-Request-Id` when it is a plausible id, else a new UUID; kept in `c.get('requestId')`
 * for logs and error answers, and sent back in the `X-Request-Id` response header.
 */
import { randomUUID } from 'node:crypto';
import type { MiddlewareHandler } from 'hono';
import { outgoingOf, requestHeader } from './node-request.js';

const CLIENT_ID = /^[\w\-=]{1,255}$/;

export function requestId(): MiddlewareHandler {
  return async (c, next) => {
    const offered = requestHeader(c, 'x-request-id');
    const id = offered !== undefined && CLIENT_ID.test(offered) ? offered : randomUUID();
    c.set('requestId', id);
    const outgoing = outgoingOf(c);
    outgoing?.setHeader('X-Request-Id', id);
    await next();
    if (outgoing === undefined) c.header('X-Request-Id', id);
  };
}

declare module 'hono' {
  interface ContextVariableMap {
    requestId: string;
  }
}
