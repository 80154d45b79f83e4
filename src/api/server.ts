/**
 * Serving the app over HTTP. Without `API_TOKENS` the API is open, so it binds to loopback only whatever `HOST`
 * says, and says so.
 *
 * Node's `requestTimeout` (300 s by default) limits the time to receive a whole request, body included: it cut
 * off any upload slower than MAX_OBJECT_BYTES / 300 s (5 GiB needs 17 MB/s) with a 408. It is off here; a body
 * that stops arriving is ended by the idle timeout in `submit.ts` instead, and slow headers by Node's
 * `headersTimeout` (60 s).
 *
 * Closing drains: no new connection is taken and idle keep-alive ones are closed, event streams (SSE) are ended at
 * once (their clients resume with Last-Event-ID), and requests in progress — an upload, a `?wait=true` — get their
 * answers, for up to `drainMs`; whatever is still open then is cut.
 *
 * `Expect: 100-continue` is answered only when the route starts reading the body, not on arrival as Node does by
 * default: a request the API refuses on its headers alone (a wrong token, an unknown store, a bad key, a declared
 * size over MAX_OBJECT_BYTES) gets its 4xx before the client sends a byte of the body, and Node closes that
 * connection rather than read a body nobody asked for.
 *
 * Only event streams are tracked, not every request: a set and a close listener per request kept each request's
 * objects alive into V8's old generation, which tripled the garbage collector's time per request (the enqueue path
 * spent ~25 µs of its ~200 µs there, against ~7 µs untracked). Connections whose requests finish during the drain
 * are closed by a sweep of idle connections instead.
 */
import { createServer, maxHeaderSize, METHODS, STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { AddressInfo, Socket } from 'node:net';
import { randomUUID } from 'node:crypto';
import { getRequestListener, RequestError } from '@hono/node-server';
import type { Hono } from 'hono';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import { ApiError, errorBody, toApiError } from './errors.js';
import type { ApiMetrics } from '../metrics.js';
import { listenHost } from '../listen-host.js';

/** The route label of requests refused before routing (their paths are whatever was sent: never a label). */
const REFUSED_ROUTE = '(refused)';

/** Counts a request refused before the app saw it: one fixed route label, and a method only from Node's list. */
type ObserveRefused = (method: string | undefined, status: number) => void;

function refusedObserver(metrics: Pick<ApiMetrics, 'observeRequest'> | undefined): ObserveRefused {
  return (method, status) => metrics?.observeRequest(method !== undefined && METHODS.includes(method) ? method : 'OTHER', REFUSED_ROUTE, status, 0);
}

/** The status line and headers of an answer written on the socket itself (no response object exists), `body` after. */
function rawAnswerHead(apiError: ApiError, requestId: string, body: string, extraHeaders = ''): string {
  return (
    `HTTP/1.1 ${apiError.status} ${STATUS_CODES[apiError.status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
    `X-Request-Id: ${requestId}\r\n${extraHeaders}Connection: close\r\n\r\n`
  );
}

export interface HttpServer {
  url: string;
  /** The Node server underneath (its timeouts, connections). */
  node: import('node:http').Server;
  /** Stops taking requests and waits up to `drainMs` (default 30 s) for those in progress. */
  close(drainMs?: number): Promise<void>;
}

/** How long closing waits for the requests in progress. */
export const DRAIN_MS = 30_000;
/** While draining, how often connections whose last request has finished are closed. */
const IDLE_SWEEP_MS = 50;

/** Requests that may become event streams: the events route's path, in origin or absolute form. */
function mayStream(request: IncomingMessage): boolean {
  return request.method === 'GET' && request.url !== undefined && request.url.includes('/v1/events');
}

function isEventStream(response: ServerResponse): boolean {
  return String(response.getHeader('content-type') ?? '').startsWith('text/event-stream');
}

/** Sends `100 Continue` when the first byte of the body is asked for, unless the final answer went out first. */
function continueOnFirstRead(request: IncomingMessage, response: ServerResponse): void {
  const read = request._read;
  request._read = function (size: number) {
    request._read = read;
    if (!response.headersSent) response.writeContinue();
    read.call(this, size);
  };
}

/**
 * A request @hono/node-server refuses before the app sees it (a literal `\\` in the path, a Host that is no host)
 * is answered as the API answers any bad request — the JSON error, a request id, a log line — not with a bare 400.
 */
function answerUnroutable(log: Logger, observe: ObserveRefused): (error: unknown) => Response {
  return (error) => {
    const apiError =
      error instanceof RequestError
        ? /backslash/i.test(error.message)
          ? new ApiError('INVALID_KEY', "the path has a literal '\\'; send it percent-encoded")
          : new ApiError('BAD_REQUEST', `the request cannot be read: ${error.message}`)
        : toApiError(error);
    const requestId = randomUUID();
    log.info({ requestId, status: apiError.status, reason: apiError.message }, 'request refused before routing');
    observe(undefined, apiError.status);
    return new Response(JSON.stringify(errorBody(apiError)), {
      status: apiError.status,
      headers: { 'Content-Type': 'application/json', 'X-Request-Id': requestId, ...apiError.headers },
    });
  };
}

/**
 * Why Node's HTTP parser refused a request, as the API's error, with the status Node itself gives each reason
 * (`socketOnError` in Node's lib/_http_server.js: 431, 413, 408, else 400).
 */
function parseError(code: string | undefined): ApiError {
  switch (code) {
    case 'HPE_HEADER_OVERFLOW':
      return new ApiError('HEADERS_TOO_LARGE', `the request's headers are larger than ${maxHeaderSize} bytes`);
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return new ApiError('PAYLOAD_TOO_LARGE', "a chunk's extensions (after ';' on its size line) are larger than Node's limit of 16 KiB");
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new ApiError('REQUEST_TIMEOUT', 'the request headers did not arrive in time');
    case 'HPE_INVALID_URL':
      return new ApiError('BAD_REQUEST', 'the request target is not a valid URL (controls and text outside ASCII in a path or query must be percent-encoded)');
    default:
      return new ApiError('BAD_REQUEST', `the request is not valid HTTP/1.1${code ? ` (${code})` : ''}`);
  }
}

/** The method of a request line (the parser skips empty lines before one). */
const REQUEST_METHOD = /^[\r\n]*([!-~]+) /;

/**
 * The method of the request a client takes the answer for: the request being served if there is one, else the one
 * refused. Of that one Node keeps only the last packet read, which starts the request only if it is all the
 * connection has read; otherwise (headers sent in pieces, a later request on a keep-alive connection) the method
 * is not known.
 */
function answeredMethod(socket: Socket, inFlight: ServerResponse | null | undefined, rawPacket: Buffer | undefined): string | undefined {
  if (inFlight) return inFlight.req.method;
  if (rawPacket === undefined || socket.bytesRead !== rawPacket.length) return undefined;
  return REQUEST_METHOD.exec(rawPacket.toString('latin1', 0, 64))?.[1];
}

/**
 * A request Node's HTTP parser refuses before any handler runs (headers over its 16 KiB limit, bytes no request line
 * may hold, a chunk's extensions over 16 KiB) is answered as the API answers any bad request — a JSON error, a
 * request id, a log line — not with Node's bare status line. `Access-Control-Allow-Origin: *` lets a page of any
 * origin read why (the answer tells nothing more); its own origin is not known here, the headers being unread. As
 * Node does, nothing is written once an answer on the connection has begun.
 */
function answerParseError(log: Logger, observe: ObserveRefused): (error: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: Duplex) => void {
  return (error, socket) => {
    const inFlight = (socket as { _httpMessage?: ServerResponse | null })._httpMessage;
    if (error.code === 'ECONNRESET' || !socket.writable || inFlight?.headersSent) return void socket.destroy();
    const apiError = parseError(error.code);
    const requestId = randomUUID();
    log.info({ requestId, status: apiError.status, reason: error.code }, 'request refused by the HTTP parser');
    // The answer to a HEAD has no body, whatever its Content-Length says: a client would read one as garbage. When
    // the method is not known, the body is left out and Content-Length is 0, which reads right either way.
    const method = answeredMethod(socket as Socket, inFlight, error.rawPacket);
    observe(method, apiError.status);
    const body = method === undefined ? '' : JSON.stringify(errorBody(apiError));
    socket.write(rawAnswerHead(apiError, requestId, body, 'Access-Control-Allow-Origin: *\r\n') + (method === 'HEAD' ? '' : body));
    socket.destroy();
  };
}

/**
 * CONNECT (a proxy's method) never reaches the app: Node hands it to `connect` listeners, and with none closes the
 * connection without a word. It is answered as any method the API does not take: 405, in JSON.
 */
function answerConnect(log: Logger, observe: ObserveRefused): (request: IncomingMessage, socket: Duplex) => void {
  return (_request, socket) => {
    const apiError = new ApiError('METHOD_NOT_ALLOWED', 'CONNECT is not a method of this API: it is no proxy');
    const requestId = randomUUID();
    log.info({ requestId, status: apiError.status, method: 'CONNECT' }, 'request refused before routing');
    observe('CONNECT', apiError.status);
    const body = JSON.stringify(errorBody(apiError));
    socket.end(rawAnswerHead(apiError, requestId, body) + body);
  };
}

/** `metrics`: where requests refused before the app saw them are counted (the app counts the rest). */
export async function listen(
  app: Hono,
  config: Pick<Config, 'host' | 'port' | 'apiTokens'>,
  log: Logger,
  metrics?: Pick<ApiMetrics, 'observeRequest'>,
): Promise<HttpServer> {
  const hostname = listenHost(config, log);
  const observe = refusedObserver(metrics);
  // `serve` of @hono/node-server, with the error handler it does not pass on.
  const node = createServer({ requestTimeout: 0 }, getRequestListener(app.fetch, { hostname, errorHandler: answerUnroutable(log, observe) }));
  const address = await new Promise<AddressInfo>((resolve, reject) => {
    node.once('error', reject);
    node.listen(config.port, hostname, () => resolve(node.address() as AddressInfo));
  });
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const streams = new Set<ServerResponse>();
  node.on('clientError', answerParseError(log, observe));
  node.on('connect', answerConnect(log, observe));
  node.on('checkContinue', (request: IncomingMessage, response: ServerResponse) => {
    continueOnFirstRead(request, response);
    node.emit('request', request, response);
  });
  node.on('request', (request: IncomingMessage, response: ServerResponse) => {
    if (!mayStream(request)) return;
    streams.add(response);
    response.once('close', () => streams.delete(response));
  });
  return {
    url: `http://${host}:${address.port}`,
    node,
    close: (drainMs = DRAIN_MS) =>
      new Promise<void>((resolve) => {
        const cut = setTimeout(() => node.closeAllConnections(), drainMs);
        // A keep-alive connection whose request is still in progress becomes idle when it is answered.
        const sweep = setInterval(() => node.closeIdleConnections(), IDLE_SWEEP_MS);
        node.close(() => {
          clearTimeout(cut);
          clearInterval(sweep);
          resolve();
        });
        node.closeIdleConnections();
        // Event streams never end by themselves.
        for (const response of streams) if (isEventStream(response)) response.destroy();
      }),
  };
}
