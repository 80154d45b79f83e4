/**
 * `Expect: 100-continue` over a real socket (curl sends it for bodies over 1 MiB). A request the API refuses on its
 * headers gets its final answer with no `100 Continue` before it, and the connection is closed rather than left
 * waiting for a body the client must not send; an accepted one gets `100 Continue` once the route reads the body,
 * and the body sent after it is stored whole.
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/api/app.js';
import { listen, type HttpServer } from '../../src/api/server.js';
import { quietLog, startTestService, type TestService } from '../support/service.js';

const TOKEN = 'expect-continue-token';
const MAX_OBJECT_BYTES = 4 * 1024 * 1024;
const CONTINUE = 'HTTP/1.1 100 Continue\r\n\r\n';

let service: TestService;
let server: HttpServer;

beforeAll(async () => {
  service = await startTestService('api-expect-continue', { STORES: 'main:ram', API_TOKENS: TOKEN, MAX_OBJECT_BYTES: String(MAX_OBJECT_BYTES) });
  server = await listen(createApp(service.deps), { host: '127.0.0.1', port: 0, apiTokens: [TOKEN] }, quietLog);
}, 60_000);

afterAll(async () => {
  await server?.close();
  await service?.close();
});

interface Exchange {
  /** Everything the server sent, in order. */
  answer: string;
  /** Whether the body was sent (only after a `100 Continue`). */
  bodySent: boolean;
  /** The server closed the connection. */
  closedByServer: boolean;
}

/**
 * Sends `head` with `Expect: 100-continue` and the body only once `100 Continue` arrives, as a client must. Resolves
 * when the final answer is complete and the connection is closed, or after `settleMs` with the connection still open.
 */
function exchange(head: string, body: Buffer, settleMs = 1_500): Promise<Exchange> {
  const { port } = new URL(server.url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), '127.0.0.1');
    let answer = '';
    let bodySent = false;
    let closedByServer = false;
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ answer, bodySent, closedByServer });
    };
    const timer = setTimeout(done, settleMs);
    socket.on('data', (chunk) => {
      answer += chunk.toString('latin1');
      if (!bodySent && answer.startsWith(CONTINUE)) {
        bodySent = true;
        socket.write(body);
      }
    });
    socket.on('end', () => {
      closedByServer = true;
      done();
    });
    socket.on('error', reject);
    socket.on('connect', () => socket.write(head));
  });
}

/** A PUT asking for 100 Continue; `close` asks the server to close the connection after its answer. */
function putHead(path: string, length: number, { token = TOKEN, close = false } = {}): string {
  return (
    `PUT ${path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/octet-stream\r\n` +
    `Content-Length: ${length}\r\nExpect: 100-continue\r\n${close ? 'Connection: close\r\n' : ''}\r\n`
  );
}

function statusLine(answer: string): string {
  return answer.slice(0, answer.indexOf('\r\n'));
}

function jsonBody(answer: string): unknown {
  const finalAnswer = answer.startsWith(CONTINUE) ? answer.slice(CONTINUE.length) : answer;
  return JSON.parse(finalAnswer.slice(finalAnswer.indexOf('\r\n\r\n') + 4));
}

describe('Expect: 100-continue', () => {
  const body = Buffer.alloc(2 * 1024 * 1024, 7);

  it.each([
    ['a wrong token', putHead('/v1/stores/main/objects/refused/token', body.length, { token: 'not-the-token' }), 401, 'UNAUTHORIZED'],
    ['an unknown store', putHead('/v1/stores/nowhere/objects/refused/store', body.length), 404, 'NOT_FOUND'],
    ['an invalid key', putHead('/v1/stores/main/objects/a%2F..%2Fb', body.length), 400, 'INVALID_KEY'],
    ['a declared size over MAX_OBJECT_BYTES', putHead('/v1/stores/main/objects/refused/size', MAX_OBJECT_BYTES + 1), 413, 'PAYLOAD_TOO_LARGE'],
  ])('%s is refused before the body is asked for', async (_name, head, status, code) => {
    const result = await exchange(head, body);
    expect(result.answer.startsWith(CONTINUE)).toBe(false);
    expect(result.bodySent).toBe(false);
    expect(statusLine(result.answer)).toMatch(new RegExp(`^HTTP/1.1 ${status} `));
    expect(jsonBody(result.answer)).toMatchObject({ error: { code } });
    // Nobody asked for the body: the connection is not kept waiting for it.
    expect(result.closedByServer).toBe(true);
  });

  // Limits the job's schema sets on what a header becomes: checked before the body, as the header's form is.
  it.each([
    ['If-Match with 33 etags', 'PUT', '', `If-Match: ${Array.from({ length: 33 }, (_, i) => `"${i}"`).join(', ')}`],
    ['an If-Match etag of 200 characters', 'PUT', '', `If-Match: "${'a'.repeat(200)}"`],
    ['an X-Version-Message of 5,000 characters', 'POST', '/versions', `X-Version-Message: ${'m'.repeat(5000)}`],
    ['an X-Author name of 300 characters', 'POST', '/versions', `X-Author: ${'n'.repeat(300)} <a@b>`],
  ])('%s is refused before the body is asked for', async (_name, method, suffix, header) => {
    const head = putHead(`/v1/stores/main/objects/refused/limit${suffix}`, body.length).replace(/^PUT /, `${method} `).replace(/\r\n\r\n$/, `\r\n${header}\r\n\r\n`);
    const result = await exchange(head, body);
    expect(result.bodySent).toBe(false);
    expect(statusLine(result.answer)).toMatch(/^HTTP\/1.1 400 /);
    expect(jsonBody(result.answer)).toMatchObject({ error: { code: 'BAD_REQUEST', message: expect.stringContaining(header.slice(0, header.indexOf(':'))) } });
  });

  it.each([
    ['a body streamed to staging', body],
    ['a small body taken inline', Buffer.from('small body sent after 100 Continue')],
  ])('%s is asked for with 100 Continue and stored whole', async (name, content) => {
    const key = `accepted/${name.replaceAll(' ', '-')}`;
    const result = await exchange(putHead(`/v1/stores/main/objects/${key}?wait=true`, content.length, { close: true }), content, 15_000);
    expect(result.bodySent).toBe(true);
    expect(result.answer.startsWith(CONTINUE)).toBe(true);
    expect(statusLine(result.answer.slice(CONTINUE.length))).toBe('HTTP/1.1 200 OK');
    const etag = createHash('sha256').update(content).digest('hex');
    expect(jsonBody(result.answer)).toMatchObject({ key, size: content.length, etag });
    expect((await service.deps.stores.get('main')!.stat(key)).etag).toBe(etag);
  });
});
