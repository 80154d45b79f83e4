/**
 * Each request's log lines carry the request id its answer's X-Request-Id carries: the `request` line, and the
 * `request failed` error line of a 5xx — on /v1, on the board, and for requests refused before routing.
 */
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_REDIS_URL } from '../support/redis.js';
import { blackHoleProxy, sleep, startObsService, type ObsService } from './support.js';

const TOKEN = 'review-obs-token-0123456789';
const auth = { Authorization: `Bearer ${TOKEN}` };
const basic = { Authorization: `Basic ${Buffer.from(`ops:${TOKEN}`).toString('base64')}` };
const redisPort = Number(new URL(TEST_REDIS_URL).port || 6379);

let proxy: Awaited<ReturnType<typeof blackHoleProxy>>;
let service: ObsService;
let base: string;

beforeAll(async () => {
  proxy = await blackHoleProxy(redisPort);
  service = await startObsService('obs-reqid', { API_TOKENS: TOKEN }, { worker: false, redisUrl: `redis://127.0.0.1:${proxy.port}` });
  base = service.server!.url;
});
afterAll(async () => {
  proxy.setDown(true);
  await service?.close().catch(() => undefined);
  await proxy?.close();
});

const lines = () => service.capture.parsed();

describe('request ids in logs', () => {
  it('every request line carries the id of its answer, for 2xx, 4xx and 5xx', async () => {
    const mem = service.deps.stores.get('mem')! as unknown as Record<string, unknown>;
    await service.deps.stores.get('mem')!.write('boom', Buffer.from('x'));
    const original = mem.read;
    mem.read = async () => {
      throw new Error('outside the contract');
    };
    const answers: { id: string; status: number }[] = [];
    try {
      for (const [path, init] of [
        ['/health', {}],
        ['/v1/stores', {}],
        ['/v1/stores', { headers: auth }],
        ['/nowhere', { headers: auth }],
        ['/health', { method: 'DELETE' }],
        ['/v1/stores/mem/objects/boom', { headers: auth }],
        ['/admin/queues', { headers: basic }],
      ] as const) {
        const response = await fetch(`${base}${path}`, init as RequestInit);
        await response.arrayBuffer();
        answers.push({ id: response.headers.get('x-request-id')!, status: response.status });
      }
    } finally {
      mem.read = original;
    }
    expect(answers.map((a) => a.status)).toEqual([200, 401, 200, 404, 405, 500, 200]);
    for (const { id, status } of answers) {
      const line = lines().find((l) => l.msg === 'request' && l.requestId === id);
      expect(line?.status, id).toBe(status);
    }
    const failed = lines().filter((l) => l.msg === 'request failed');
    expect(failed.map((l) => l.requestId)).toEqual([answers[5]!.id]);
  });

  it('a 5xx of the board (its API while Redis is down) is logged with the request id of its answer', async () => {
    proxy.setDown(true);
    for (let i = 0; i < 40 && service.deps.redis.status === 'ready'; i++) await sleep(50);
    const response = await fetch(`${base}/admin/queues/api/queues`, { headers: basic });
    await response.arrayBuffer();
    expect(response.status).toBe(503);
    const id = response.headers.get('x-request-id');
    expect(lines().find((l) => l.msg === 'request' && l.requestId === id)?.status).toBe(503);
    const failed = lines().filter((l) => l.msg === 'request failed');
    const last = failed[failed.length - 1]!;
    expect(last.err, 'the error line of the board 503').toBeDefined();
    expect(last.requestId, 'its request id').toBe(id);
    proxy.setDown(false);
  });

  it('a request refused by the HTTP parser is logged with the id its answer carries', async () => {
    const url = new URL(base);
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(url.port), url.hostname);
      let text = '';
      socket.on('data', (d) => (text += d.toString('latin1')));
      socket.on('error', reject);
      socket.on('close', () => resolve(text));
      socket.write(`GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    });
    const id = /x-request-id: ([^\r\n]+)/i.exec(answer)?.[1];
    expect(id).toBeDefined();
    expect(lines().some((l) => l.requestId === id && l.status === 431)).toBe(true);
  });
});
