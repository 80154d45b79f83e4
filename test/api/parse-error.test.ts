/**
 * What a request Node's HTTP parser refuses, before the app sees it, is answered with: the status Node itself gives
 * that reason, a JSON error whose message fits the reason, and no body when the request may be a HEAD. Raw bytes over
 * a socket, so that requests arrive exactly as written and in the pieces written.
 */
import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/api/app.js';
import { listen, type HttpServer } from '../../src/api/server.js';
import { quietLog, startTestService, type TestService } from '../support/service.js';

/** Long enough apart that each piece reaches the server as a packet of its own. */
const PIECE_GAP_MS = 50;

let service: TestService;
let server: HttpServer;

beforeAll(async () => {
  service = await startTestService('api-parse-error', { STORES: 'mem:ram' });
  server = await listen(createApp(service.deps), { host: '127.0.0.1', port: 0, apiTokens: [] }, quietLog);
}, 60_000);
afterAll(async () => {
  await server?.close();
  await service?.close();
});

interface Answer {
  status: number;
  headers: string[];
  body: string;
}

/** Sends `pieces` in separate writes and returns what the server answered by the time it closed the connection. */
function exchange(...pieces: (string | Buffer)[]): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(new URL(server.url).port), '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => socket.destroy(new Error('the server did not close the connection')), 10_000);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('close', () => {
      clearTimeout(timer);
      const answer = Buffer.concat(chunks).toString('latin1');
      const end = answer.indexOf('\r\n\r\n');
      if (end < 0) return reject(new Error(`no complete answer: ${JSON.stringify(answer)}`));
      const [statusLine = '', ...headers] = answer.slice(0, end).split('\r\n');
      resolve({ status: Number(statusLine.split(' ')[1]), headers, body: answer.slice(end + 4) });
    });
    socket.on('error', () => undefined); // a write after the server closed; what it answered is read on 'close'
    socket.on('connect', async () => {
      for (const [i, piece] of pieces.entries()) {
        if (i > 0) await new Promise((wait) => setTimeout(wait, PIECE_GAP_MS));
        if (!socket.destroyed) socket.write(piece);
      }
    });
  });
}

const errorOf = (answer: Answer) => (JSON.parse(answer.body) as { error: { code: string; message: string } }).error;

describe('refused by the HTTP parser', () => {
  it("a chunk's extensions over Node's 16 KiB limit are 413 PAYLOAD_TOO_LARGE, the status Node gives them, and nothing is stored", async () => {
    const head = 'PUT /v1/stores/mem/objects/chunk/extensions HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n';
    const answer = await exchange(`${head}5;name=${'v'.repeat(17 * 1024)}\r\nhello\r\n0\r\n\r\n`);
    expect(answer.status).toBe(413);
    expect(errorOf(answer)).toEqual({ code: 'PAYLOAD_TOO_LARGE', message: expect.stringMatching(/chunk's extensions .* larger than Node's limit of 16 KiB/) });
    expect(answer.headers).toContainEqual(expect.stringMatching(/^X-Request-Id: [0-9a-f-]{36}$/i));
    expect((await service.app.request('/v1/stores/mem/objects/chunk/extensions')).status).toBe(404);
  });

  it.each([
    ['a method with a byte no method may hold', 'G@T / HTTP/1.1\r\nHost: test\r\n\r\n', 'HPE_INVALID_METHOD'],
    ['a header name with a space', 'GET / HTTP/1.1\r\nHost: test\r\nBad Name: x\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
    ['an HTTP version that is not 1.x', 'GET / HTTP/9.1\r\nHost: test\r\n\r\n', 'HPE_INVALID_VERSION'],
  ])('%s is a 400 naming the parser’s reason, with no word of percent-encoding', async (_name, request, code) => {
    const answer = await exchange(request);
    expect(answer.status).toBe(400);
    expect(errorOf(answer)).toEqual({ code: 'BAD_REQUEST', message: `the request is not valid HTTP/1.1 (${code})` });
  });

  it('raw bytes outside ASCII in the request target are a 400 saying to percent-encode them', async () => {
    const answer = await exchange(Buffer.from('GET /v1/stores/mem/objects/caf\xe9 HTTP/1.1\r\nHost: test\r\n\r\n', 'latin1'));
    expect(answer.status).toBe(400);
    expect(errorOf(answer)).toEqual({ code: 'BAD_REQUEST', message: expect.stringContaining('must be percent-encoded') });
  });

  it('a HEAD whose headers overflow in several packets gets its 431 with no body after the blank line', async () => {
    const answer = await exchange('HEAD / HTTP/1.1\r\nHost: test\r\n', `X-A: ${'a'.repeat(9 * 1024)}\r\n`, `X-B: ${'b'.repeat(9 * 1024)}\r\n\r\n`);
    expect(answer.status).toBe(431);
    expect(answer.body).toBe('');
    expect(answer.headers).toContainEqual('Content-Length: 0'); // the method not being known, right for a GET too
    // The same overflow in one packet, of a GET: the method is known, and the JSON is sent.
    const get = await exchange(`GET / HTTP/1.1\r\nHost: test\r\nX-A: ${'a'.repeat(20 * 1024)}\r\n\r\n`);
    expect(get.status).toBe(431);
    expect(errorOf(get).code).toBe('HEADERS_TOO_LARGE');
  });

  it('a later request on a keep-alive connection, whose method is not known, gets an answer its client reads whole', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const get = (path: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        // Options, not a URL: a URL would percent-encode the path.
        const request = http.get({ host: '127.0.0.1', port: new URL(server.url).port, path, agent }, (response) => {
          let body = '';
          response.on('data', (chunk: Buffer) => (body += chunk.toString()));
          response.on('end', () => resolve({ status: response.statusCode!, body }));
          response.on('error', reject);
        });
        request.on('error', reject);
      });
    try {
      expect((await get('/health')).status).toBe(200);
      expect(await get('/v1/stores/mem/objects/caf\u00e9')).toEqual({ status: 400, body: '' });
    } finally {
      agent.destroy();
    }
  });
});
