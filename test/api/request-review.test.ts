/**
 * Requests over a real socket whose bodies or headers must not be stored as sent: a transfer coding Node does not
 * remove, a Content-Type that is not ASCII, `X-Meta-__proto__`; and a body sent whole that waits on a slow staging
 * store, which is not the client's idleness. Real Redis, a real worker, real stores.
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/api/app.js';
import { listen, type HttpServer } from '../../src/api/server.js';
import { createStaging } from '../../src/jobs/staging.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { quietLog, startTestService, type TestService } from '../support/service.js';

const IDLE_MS = 150;
/** The staging store below takes one chunk per this: slower than the client, which sent everything at once. */
const PER_CHUNK_MS = 200;

let service: TestService;
let server: HttpServer;
let slowServer: HttpServer;

/** The staging provider, its writes reading their body one chunk per PER_CHUNK_MS (an s3 part uploading, say). */
function slowWrites(provider: StorageProvider): StorageProvider {
  return new Proxy(provider, {
    get(target, prop, receiver) {
      if (prop !== 'write') {
        const value = Reflect.get(target, prop, receiver) as unknown;
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      }
      return (key: string, body: Readable, opts: unknown) => {
        const slowed = Readable.from(
          (async function* () {
            for await (const chunk of body) {
              await new Promise((resolve) => setTimeout(resolve, PER_CHUNK_MS));
              yield chunk as Buffer;
            }
          })(),
          { objectMode: false, highWaterMark: 1 },
        );
        return target.write(key, slowed, opts as never);
      };
    },
  });
}

beforeAll(async () => {
  service = await startTestService('api-request-review', { STORES: 'files:disk,mem:ram', STAGING_INLINE_MAX: '1024' });
  server = await listen(createApp(service.deps), { host: '127.0.0.1', port: 0, apiTokens: [] }, quietLog);
  const staging = createStaging({ provider: slowWrites(service.stagingProvider), inlineMax: 1024 });
  slowServer = await listen(createApp({ ...service.deps, staging, bodyIdleTimeoutMs: IDLE_MS }), { host: '127.0.0.1', port: 0, apiTokens: [] }, quietLog);
}, 60_000);

afterAll(async () => {
  await server?.close();
  await slowServer?.close();
  await service?.close();
});

/** Writes `request` and collects the answer until the server closes the connection (the requests say `close`). */
function exchange(at: HttpServer, request: Buffer | string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(new URL(at.url).port), '127.0.0.1');
    let answer = '';
    socket.on('data', (chunk) => (answer += chunk.toString('latin1')));
    socket.on('end', () => resolve(answer));
    socket.on('error', reject);
    socket.on('connect', () => socket.write(request));
  });
}

const statusLine = (answer: string) => answer.slice(0, answer.indexOf('\r\n'));
const headerBytes = (answer: string, name: string) => {
  const line = answer.split('\r\n').find((candidate) => candidate.toLowerCase().startsWith(`${name}:`))!;
  return Buffer.from(line.slice(line.indexOf(':') + 1).trim(), 'latin1');
};

describe('a request body', () => {
  it.each(['gzip, chunked', 'deflate, chunked'])('with Transfer-Encoding: %s is refused with 501, nothing stored', async (codings) => {
    const coded = gzipSync(Buffer.from('hello, transfer-coded world\n'.repeat(20)));
    const key = `te-${codings.split(',')[0]}`;
    const head = `PUT /v1/stores/files/objects/${key}?wait=true HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: ${codings}\r\nConnection: close\r\n\r\n`;
    const chunked = Buffer.concat([Buffer.from(`${coded.length.toString(16)}\r\n`), coded, Buffer.from('\r\n0\r\n\r\n')]);
    const answer = await exchange(server, Buffer.concat([Buffer.from(head), chunked]));
    expect(statusLine(answer)).toMatch(/^HTTP\/1.1 501 /);
    expect(answer).toContain('"NOT_SUPPORTED"');
    await expect(service.deps.stores.get('files')!.stat(key)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('sent whole, waiting only on a slow staging store, is stored: not cut off with 408', async () => {
    const body = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < body.length; i++) body[i] = i % 251;
    const head = `PUT /v1/stores/mem/objects/slow?wait=true HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
    const answer = await exchange(slowServer, Buffer.concat([Buffer.from(head), body]));
    expect(statusLine(answer)).toBe('HTTP/1.1 200 OK');
    expect(answer).toContain(createHash('sha256').update(body).digest('hex'));
  }, 60_000);
});

describe('headers a write would not keep as sent', () => {
  it('a Content-Type with bytes outside ASCII (raw UTF-8) is 400, nothing stored', async () => {
    const head = Buffer.concat([
      Buffer.from('PUT /v1/stores/files/objects/ct?wait=true HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nConnection: close\r\nContent-Type: '),
      Buffer.from('text/plain; filename="Köln.txt"', 'utf8'),
      Buffer.from('\r\n\r\nhi'),
    ]);
    const answer = await exchange(server, head);
    expect(statusLine(answer)).toMatch(/^HTTP\/1.1 400 /);
    expect(answer).toContain('Content-Type must be printable ASCII');
    await expect(service.deps.stores.get('files')!.stat('ct')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('a Content-Type stored outside ASCII (by an earlier release, or directly) goes out the same on HEAD and GET, as the default', async () => {
    await service.deps.stores.get('mem')!.write('latin1-type', Buffer.from('hi'), { contentType: 'text/plain; filename="KÃ¶ln.txt"' });
    const answers = await Promise.all(
      ['HEAD', 'GET'].map((method) => exchange(server, `${method} /v1/stores/mem/objects/latin1-type HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`)),
    );
    for (const answer of answers) expect(headerBytes(answer, 'content-type').toString('latin1')).toBe('application/octet-stream');
  });

  it('X-Meta-__proto__ is refused with 400 as any name the store does not take: never dropped silently', async () => {
    const put = (key: string, headers: Record<string, string>) =>
      fetch(`${server.url}/v1/stores/files/objects/${key}?wait=true`, { method: 'PUT', body: 'x', headers });
    expect((await put('ctl', { 'X-Meta-_x': 'v' })).status).toBe(400);
    const response = await put('proto', { 'X-Meta-__proto__': 'v', 'X-Meta-Owner': 'ada' });
    expect(response.status).toBe(400);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe('INVALID_ARGUMENT');
    await expect(service.deps.stores.get('files')!.stat('proto')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});
