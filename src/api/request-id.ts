/**
 * Request ids: the client's `X-Request-Id` when it is a plausible id, else a new UUID; kept in `c.get('requestId')`
 * for logs and error answers, and sent back in the `X-Request-Id` response header.
 */
import { randomUUID } from 'node:crypto';
import type { Context } from 'hono';
import { echoAnswerHeader, requestHeader, setAnswerHeader } from './node-request.js';

const CLIENT_ID = /^[\w\-=]{1,255}$/;

/** Picks the request's id and puts it on the answer (`setAnswerHeader`: call `echoRequestId` once it exists). */
export function assignRequestId(c: Context): string {
  const offered = requestHeader(c, 'x-request-id');
  const id = offered !== undefined && CLIENT_ID.test(offered) ? offered : randomUUID();
  c.set('requestId', id);
  setAnswerHeader(c, 'X-Request-Id', id);
  return id;
}

export function echoRequestId(c: Context, id: string): void {
  echoAnswerHeader(c, 'X-Request-Id', id);
}

declare module 'hono' {
  interface ContextVariableMap {
    requestId: string;
  }
}
