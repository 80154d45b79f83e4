/**
 * README (Events, Order): "the events of one key's mutations leave in the order the mutations took effect when one
 * worker process runs them". Before session 20, on ram and disk a write whose body was staged journaled its result
 * and released the staged blob AFTER the store commit and BEFORE its event, so a later mutation of the same key (an
 * inline write, a delete) committed in that window emitted first (7-14 of 30 rounds), and an inline write's path
 * from its commit to its event was longer than a delete's: the key's last event named a state that was not current.
 * Now a job takes a turn on its key at its fence and emits after the earlier turns (`workers/key-turns.ts`).
 *
 * One worker (in the test process, concurrency 8), STAGING_INLINE_MAX=1024: A = staged write (8 KiB), then after a
 * short, varied delay B = an inline write or a delete of the same key. Ground truth of which committed last: the
 * object after both jobs are done. The last event of the key must describe it.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestService, type TestService } from '../support/service.js';
import { closeRedis } from '../../src/redis.js';
import { connectRedis } from '../support/redis.js';

let service: TestService;
const sha = (b: string) => createHash('sha256').update(b).digest('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface StreamEvent {
  type: string;
  store?: string;
  key?: string;
  data: Record<string, unknown>;
}

/** Every event in the stream, oldest first. */
async function streamEvents(redis: Awaited<ReturnType<typeof connectRedis>>, prefix: string): Promise<StreamEvent[]> {
  const found: StreamEvent[] = [];
  let start = '-';
  for (;;) {
    const entries = (await redis.xrange(`${prefix}:events`, start, '+', 'COUNT', 1000)) as [string, string[]][];
    for (const [, fields] of entries) found.push(JSON.parse(fields[fields.indexOf('e') + 1]!) as StreamEvent);
    if (entries.length < 1000) return found;
    start = `(${entries[entries.length - 1]![0]}`;
  }
}

beforeAll(async () => {
  service = await startTestService('key-event-order', { STAGING_INLINE_MAX: '1024', WORKER_CONCURRENCY: '8' });
});
afterAll(async () => {
  await service?.close();
});

async function job(path: string, init: RequestInit): Promise<string> {
  const response = await service.app.request(path, init);
  expect(response.status).toBe(202);
  return ((await response.json()) as { jobId: string }).jobId;
}

async function settled(jobId: string): Promise<string> {
  for (;;) {
    const status = (await (await service.app.request(`/v1/jobs/${jobId}`)).json()) as { state: string };
    if (status.state === 'completed' || status.state === 'failed') return status.state;
    await sleep(20);
  }
}

async function rounds(store: string, second: 'write' | 'delete', count: number, firstSize = 8192): Promise<string[]> {
  const wrong: string[] = [];
  const redis = await connectRedis();
  try {
    for (let r = 0; r < count; r++) {
      const key = `order-${second}-${firstSize}/${r}`;
      const path = `/v1/stores/${store}/objects/${key}`;
      const big = `A${r}-`.padEnd(firstSize, 'x');
      const a = await job(path, { method: 'PUT', body: big, headers: { 'Content-Type': 'text/plain' } });
      await sleep(r % 6);
      const b =
        second === 'write'
          ? await job(path, { method: 'PUT', body: `B${r}`, headers: { 'Content-Type': 'text/plain' } })
          : await job(path, { method: 'DELETE' });
      await Promise.all([settled(a), settled(b)]);
      const current = await service.app.request(path);
      const truth = current.status === 200 ? sha(await current.text()) : 'deleted';
      const events = (await streamEvents(redis, service.config.queuePrefix)).filter((e) => e.key === key && e.store === store);
      const last = events.at(-1)!;
      const said = last.type === 'object.deleted' ? 'deleted' : String(last.data.etag);
      if (said !== truth) wrong.push(`${key}: current ${truth.slice(0, 12)}, last event ${last.type} ${said.slice(0, 12)} (events: ${events.map((e) => e.type).join(', ')})`);
    }
  } finally {
    await closeRedis(redis);
  }
  return wrong;
}

describe('events of one key follow its mutations (one worker process)', () => {
  for (const store of ['mem', 'files']) {
    it(`${store}: a staged write followed by an inline write`, async () => {
      const wrong = await rounds(store, 'write', 30);
      console.log(`[key event order] ${store} write/write: ${wrong.length} of 30 rounds wrong`);
      expect(wrong).toEqual([]);
    });
    it(`${store}: a staged write followed by a delete`, async () => {
      const wrong = await rounds(store, 'delete', 30);
      console.log(`[key event order] ${store} write/delete: ${wrong.length} of 30 rounds wrong`);
      expect(wrong).toEqual([]);
    });
  }
  it('mem: inline write then delete (no staging) ', async () => {
    const wrong = await rounds('mem', 'delete', 60, 100);
    console.log(`[key event order] mem inline write/delete: ${wrong.length} of 60 rounds wrong`);
    expect(wrong).toEqual([]);
  });
  it('mem: two inline writes (no staging) ', async () => {
    const wrong = await rounds('mem', 'write', 30, 100);
    console.log(`[key event order] mem inline write/write: ${wrong.length} of 30 rounds wrong`);
    expect(wrong).toEqual([]);
  });
});
