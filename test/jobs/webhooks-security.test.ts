import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Queue, type Job } from 'bullmq';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BOARD_PATH, boardRoutes } from '../../src/api/board.js';
import { startWebhooks, verifySignature, webhookQueueName, type Delivery, type Webhooks } from '../../src/events/webhooks.js';
import { redisFixture, type RedisFixture } from '../support/redis.js';
import { quietLog, waitFor } from './fixtures/pipeline.js';

const SECRET = 'test-secret';

interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
}

describe('webhook deliveries go only to the configured URLs', () => {
  let redis: RedisFixture;
  let server: Server;
  let base: string;
  let url: string;
  let webhooks: Webhooks;
  let queue: Queue<Delivery>;
  const received: Received[] = [];

  beforeAll(async () => {
    server = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        received.push({ path: request.url ?? '', headers: request.headers, body: Buffer.concat(chunks).toString('utf8') });
        response.writeHead(204).end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    url = `${base}/receiver`;
    redis = await redisFixture('webhooks-security');
    webhooks = startWebhooks({
      connection: redis.worker,
      prefix: redis.prefix,
      streamKey: `${redis.prefix}:events`,
      urls: [url],
      secret: SECRET,
      log: quietLog,
      backoffDelayMs: 20,
      blockMs: 200,
    });
    await webhooks.ready;
    queue = webhooks.queues.get(url)!;
  });

  afterAll(async () => {
    await webhooks?.close();
    await redis?.cleanup();
    await new Promise((resolve) => server?.close(resolve));
  });

  const finished = (job: Job<Delivery>) =>
    waitFor(
      async () => {
        const state = await job.getState();
        return state === 'completed' || state === 'failed' ? state : undefined;
      },
      { what: `job ${job.id} finished` },
    );

  it('a job whose url is not its queue URL is refused for good, and no request is sent anywhere', async () => {
    const forged = JSON.stringify({ id: '9999999999999-0', type: 'object.deleted', store: 'main', key: 'k', data: {} });
    const job = await queue.add('deliver', { url: `${base}/attacker`, type: 'object.deleted', eventId: '9999999999999-0', body: forged });

    expect(await finished(job)).toBe('failed');
    const failed = (await queue.getJob(job.id!))!;
    expect(failed.attemptsMade).toBe(1);
    expect(failed.failedReason).toBe(`refused: the job's url is not ${base} (${webhookQueueName(url)}), the URL of this queue`);
    expect(received.filter((r) => r.headers['x-kyozo-event-id'] === '9999999999999-0')).toEqual([]);
  });

  it('a job for its queue URL is delivered there, signed', async () => {
    const body = JSON.stringify({ id: '1-0', type: 'object.written', store: 'main', key: 'k', data: {} });
    const job = await queue.add('deliver', { url, type: 'object.written', eventId: '1-0', body });

    expect(await finished(job)).toBe('completed');
    const delivery = received.find((r) => r.headers['x-kyozo-event-id'] === '1-0')!;
    expect(delivery.path).toBe('/receiver');
    expect(verifySignature(delivery.body, delivery.headers['x-kyozo-signature'] as string, SECRET)).toBe(true);
  });

  it('the board shows webhook delivery queues read-only: no job is added or edited there; other queues stay writable', async () => {
    const other = new Queue('board-writable', { connection: redis.producer, prefix: redis.prefix });
    try {
      const app = new Hono().route(BOARD_PATH, boardRoutes([queue as Queue, other]));
      const post = (path: string, method: string, body: unknown) =>
        app.request(`${BOARD_PATH}/api/queues/${path}`, { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      const addition = { name: 'deliver', data: { url: `${base}/attacker`, type: 't', eventId: '2-0', body: '{}' } };
      const before = await queue.count();

      expect((await post(`${queue.name}/add`, 'POST', addition)).status).toBe(405);
      expect(await queue.count()).toBe(before);
      const waiting = await queue.add('deliver', { url, type: 't', eventId: '3-0', body: '{}' }, { delay: 60_000 });
      expect((await post(`${queue.name}/${waiting.id}/update-data`, 'PATCH', { jobData: { ...waiting.data, url: `${base}/attacker` } })).status).toBe(405);
      expect((await queue.getJob(waiting.id!))!.data.url).toBe(url);
      await waiting.remove();

      expect((await post(`${other.name}/add`, 'POST', { name: 'x', data: {} })).status).toBe(200);
      expect(await other.count()).toBe(1);
    } finally {
      await other.obliterate({ force: true });
      await other.close();
    }
  });
});
