/**
 * What fuzzing a running service found in session 19 (about 43,000 requests over every route; no crash, no stack
 * trace): each test states the contract the README gives, and each failed before that session's fixes.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/api/app.js';
import { listen, type HttpServer } from '../../src/api/server.js';
import { quietLog, startTestService, type TestService } from '../support/service.js';

const TOKEN = 'fuzz-findings-token-0123456789';
const AUTH = `Bearer ${TOKEN}`;

let service: TestService;
let server: HttpServer;
let port: number;

beforeAll(async () => {
  service = await startTestService('api-fuzz-findings', { API_TOKENS: TOKEN });
  server = await listen(createApp(service.deps), { host: '127.0.0.1', port: 0, apiTokens: [TOKEN] }, quietLog, service.deps.metrics);
  port = Number(new URL(server.url).port);
}, 60_000);
afterAll(async () => {
  await server?.close();
  await service?.close();
});

/** Writes `bytes` on a new connection; resolves with everything the server sent before closing (or `afterMs`). */
function exchange(bytes: string | Buffer, { destroyAfterMs, afterMs = 5_000 }: { destroyAfterMs?: number; afterMs?: number } = {}): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const done = () => resolve(Buffer.concat(chunks).toString('latin1'));
    const timer = setTimeout(() => {
      socket.destroy();
      done();
    }, afterMs);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      done();
    });
    socket.on('connect', () => {
      socket.write(bytes);
      if (destroyAfterMs !== undefined) setTimeout(() => socket.destroy(), destroyAfterMs);
    });
  });
}

const statusOf = (answer: string) => Number(answer.split('\r\n')[0]?.split(' ')[1]);

describe('fuzzing findings (session 19)', () => {
  it('an empty Host header on GET .../url is a 4xx, not a 500 (new URL(path, "http://") throws in objects.ts)', async () => {
    // Through app.request(): the same code path as Node, without Node's parser.
    const viaApp = await service.app.request('/v1/stores/files/objects/any/url?method=PUT', { headers: { Host: '', Authorization: AUTH } });
    expect(viaApp.status).toBeLessThan(500);
    // And over a real socket, as curl -H 'Host:' sends it.
    const answer = await exchange(`GET /v1/stores/files/objects/any/url?method=PUT HTTP/1.1\r\nHost: \r\nAuthorization: ${AUTH}\r\nConnection: close\r\n\r\n`);
    expect(statusOf(answer)).toBeLessThan(500);
  });

  it('a client that disconnects mid-upload is not counted and logged as a 500 INTERNAL of the server', async () => {
    // 10 of a declared 1,000 bytes, then the connection goes away.
    await exchange(`PUT /v1/stores/files/objects/aborted/upload HTTP/1.1\r\nHost: test\r\nAuthorization: ${AUTH}\r\nContent-Length: 1000\r\n\r\n0123456789`, {
      destroyAfterMs: 200,
      afterMs: 1_000,
    });
    await new Promise((wait) => setTimeout(wait, 500));
    const metrics = await service.deps.metrics.registry.metrics();
    const serverErrors = metrics.split('\n').filter((line) => /^kyozo_http_request_duration_seconds_count\{.*method="PUT".*status="5\d\d"/.test(line) && !line.endsWith(' 0'));
    expect(serverErrors).toEqual([]);
    expect((await service.app.request('/v1/stores/files/objects/aborted/upload', { headers: { Authorization: AUTH } })).status).toBe(404);
  });

  it('a signed URL asked for without a Host header (HTTP/1.0) names the port the server listens on', async () => {
    await service.app.request('/v1/stores/files/objects/h10/key?wait=true', { method: 'PUT', body: 'x', headers: { Authorization: AUTH } });
    const answer = await exchange(`GET /v1/stores/files/objects/h10/key/url HTTP/1.0\r\nAuthorization: ${AUTH}\r\n\r\n`);
    expect(statusOf(answer)).toBe(200);
    const { url } = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as { url: string };
    // Before session 19: http://127.0.0.1/v1/signed/... (port 80), a URL that reaches nothing.
    expect(new URL(url).port).toBe(String(port));
  });

  it('?prefix= that is not valid percent-encoded UTF-8 is refused, not read literally (a DELETE by it deletes "%FF…" keys)', async () => {
    const headers = { Authorization: AUTH };
    // A key whose name really starts with the three characters "%FF" (sent as %25FF).
    expect((await service.app.request('/v1/stores/files/objects/%25FFvictim?wait=true', { method: 'PUT', body: 'x', headers })).status).toBe(200);
    // The path refuses broken encoding (INVALID_KEY); the query takes it as the literal text "%FF".
    expect((await service.app.request('/v1/stores/files/objects/%FFvictim', { headers })).status).toBe(400);
    expect.soft((await service.app.request('/v1/stores/files/objects?prefix=%FF', { headers })).status).toBe(400);
    const deleted = await service.app.request('/v1/stores/files/objects?prefix=%FF&wait=true', { method: 'DELETE', headers });
    expect.soft(deleted.status).toBe(400); // before session 19: 200 {"prefix":"%FF","deleted":1}
    expect.soft((await service.app.request('/v1/stores/files/objects/%25FFvictim', { headers })).status).toBe(200);
  });

  it.each(['0x10', '0b11', '0o7', '1e1', '+5', '5.0', '%205'])('?limit=%s is not a whole number as the 400 message says, and is refused', async (limit) => {
    const answer = await service.app.request(`/v1/stores/files/objects?limit=${limit}`, { headers: { Authorization: AUTH } });
    expect(answer.status).toBe(400);
  });

  it('CONNECT gets an HTTP answer (a JSON 4xx such as 405), not a connection closed without a word', async () => {
    const answer = await exchange(`CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: ${AUTH}\r\n\r\n`);
    expect(answer).not.toBe('');
    expect(statusOf(answer)).toBeGreaterThanOrEqual(400);
    expect(statusOf(answer)).toBeLessThan(500);
  });
});
