/**
 * Requests over a real socket. Small bodies: the API takes a body that has already arrived whole straight from
 * Node's buffer (`arrivedBody`), and reads one that is still on its way the usual way. Whichever path a request
 * takes, the stored object holds exactly the bytes sent: sent with the headers in one packet, after the headers,
 * and in two parts with a pause between them. Request targets: the absolute form addresses the same key.
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/api/app.js';
import { listen, type HttpServer } from '../../src/api/server.js';
import { quietLog, startTestService, type TestService } from '../support/service.js';

let service: TestService;
let server: HttpServer;

beforeAll(async () => {
  service = await startTestService('api-request-body', { STORES: 'main:ram' });
  server = await listen(createApp(service.deps), { host: '127.0.0.1', port: 0, apiTokens: [] }, quietLog);
}, 60_000);

afterAll(async () => {
  await server?.close();
  await service?.close();
});

/** Sends `parts` on one connection with `pauseMs` between them; resolves with the raw answer once it is complete. */
function send(parts: Buffer[], pauseMs: number): Promise<string> {
  const { port } = new URL(server.url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), '127.0.0.1');
    let answer = '';
    socket.setNoDelay(true);
    socket.on('data', (chunk) => {
      answer += chunk.toString('latin1');
      const headerEnd = answer.indexOf('\r\n\r\n');
      const length = /content-length: (\d+)/i.exec(answer)?.[1];
      if (headerEnd >= 0 && length !== undefined && answer.length >= headerEnd + 4 + Number(length)) {
        socket.end();
        resolve(answer);
      }
    });
    socket.on('error', reject);
    socket.on('connect', async () => {
      for (const [index, part] of parts.entries()) {
        if (index > 0) await new Promise((wait) => setTimeout(wait, pauseMs));
        socket.write(part);
      }
    });
  });
}

function putRequest(key: string, body: Buffer): { head: Buffer; body: Buffer } {
  const head = Buffer.from(
    `PUT /v1/stores/main/objects/${key}?wait=true HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n` +
      `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n`,
    'latin1',
  );
  return { head, body };
}

describe('a small PUT body is stored exactly as sent', () => {
  const body = Buffer.from(Array.from({ length: 3000 }, (_, index) => (index * 7) % 256));
  const etag = createHash('sha256').update(body).digest('hex');
  const cases: [string, (request: { head: Buffer; body: Buffer }) => Buffer[]][] = [
    ['headers and body in one packet', ({ head, body }) => [Buffer.concat([head, body])]],
    ['body after the headers', ({ head, body }) => [head, body]],
    ['body in two parts with a pause', ({ head, body }) => [Buffer.concat([head, body.subarray(0, 1000)]), body.subarray(1000)]],
  ];

  it.each(cases)('%s', async (name, split) => {
    const key = `body/${name.replaceAll(' ', '-')}`;
    const answer = await send(split(putRequest(key, body)), 50);
    expect(answer.split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
    expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4))).toMatchObject({ key, size: body.length, etag });
    const stored = await service.deps.stores.get('main')!.read(key);
    const chunks: Buffer[] = [];
    for await (const chunk of stored.body) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).equals(body)).toBe(true);
  });
});

describe('request targets', () => {
  it('the absolute form (as sent to a proxy) addresses the same key as the origin form', async () => {
    const body = Buffer.from('absolute');
    const head = Buffer.from(
      `PUT http://127.0.0.1/v1/stores/main/objects/target/c/d?wait=true HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`,
      'latin1',
    );
    const answer = await send([Buffer.concat([head, body])], 0);
    expect(answer.split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
    expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4))).toMatchObject({ key: 'target/c/d' });
    expect((await service.deps.stores.get('main')!.stat('target/c/d')).size).toBe(body.length);
  });
});
