/**
 * The request as Node parsed it. Under @hono/node-server, `c.req.header()` and `c.header()` each build a web
 * `Headers` object (and the latter a new Response) per request, which on the enqueue path costs about as much as
 * the route itself; the `IncomingMessage` and `ServerResponse` underneath already hold the same data as plain
 * objects. Outside Node (tests calling `app.request()`), these fall back to Hono's own accessors.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Context } from 'hono';

interface NodeBindings {
  incoming?: IncomingMessage;
  outgoing?: ServerResponse;
}

function bindings(c: Context): NodeBindings | undefined {
  return c.env as NodeBindings | undefined;
}

export function incomingOf(c: Context): IncomingMessage | undefined {
  return bindings(c)?.incoming;
}

/** A request header by its lower-case name; repeated headers joined with ', ' as in `Headers.get`. */
export function requestHeader(c: Context, name: string): string | undefined {
  const incoming = incomingOf(c);
  if (incoming === undefined) return c.req.header(name);
  const value = incoming.headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

/** How many times a request header was sent (Node joins a repeated one into one value; outside Node, 0 or 1). */
export function requestHeaderCount(c: Context, name: string): number {
  const incoming = incomingOf(c);
  if (incoming === undefined) return c.req.header(name) === undefined ? 0 : 1;
  let count = 0;
  for (let i = 0; i < incoming.rawHeaders.length; i += 2) if (incoming.rawHeaders[i]!.toLowerCase() === name) count++;
  return count;
}

/**
 * A body of `length` bytes that has already arrived whole (a small body usually comes in the same packet as its
 * headers), taken from Node's buffer without a promise, a timer or a copy; `undefined` when it has not (or outside
 * Node): read it the usual way then.
 */
export function arrivedBody(c: Context, length: number): Buffer | undefined {
  const incoming = incomingOf(c);
  // All `length` bytes (the request's Content-Length) are buffered: nothing more can belong to this body.
  if (incoming === undefined || incoming.readableDidRead || incoming.readableLength !== length || length === 0) return undefined;
  return incoming.read() as Buffer;
}

/** A request's headers as (lower-case name, value) pairs. */
export function requestHeaderEntries(c: Context): Iterable<[string, string]> {
  const incoming = incomingOf(c);
  if (incoming === undefined) return c.req.raw.headers.entries();
  return Object.entries(incoming.headers).map(([name, value]): [string, string] => [name, Array.isArray(value) ? value.join(', ') : (value ?? '')]);
}

/** Node's response: a header set on it before the handler answers is merged into whatever it answers. */
export function outgoingOf(c: Context): ServerResponse | undefined {
  return bindings(c)?.outgoing;
}

/**
 * Puts a header on Node's response, where it is merged into whatever the request is answered with (an error
 * included). Outside Node (`app.request()`) there is no such response: call `echoAnswerHeader` once the answer exists.
 */
export function setAnswerHeader(c: Context, name: string, value: string): void {
  outgoingOf(c)?.setHeader(name, value);
}

export function echoAnswerHeader(c: Context, name: string, value: string): void {
  if (outgoingOf(c) === undefined) c.header(name, value);
}
