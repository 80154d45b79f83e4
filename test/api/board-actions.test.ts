/**
 * What an operator with valid credentials does on the board (`/admin/queues/api/...`, the calls its page
 * makes) against a real worker: retry, promote, clean, remove, pause/resume, add, duplicate, a scheduler's "run now".
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../../src/providers/body.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { startTestService, type TestService } from '../support/service.js';

const TOKEN = 'board-review-token-123456';
const auth = { Authorization: `Bearer ${TOKEN}` };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let s: TestService;

beforeAll(async () => {
  s = await startTestService('review-board', { API_TOKENS: TOKEN });
});
afterAll(async () => {
  await s?.close();
});

const board = (method: string, path: string, body: unknown = {}) =>
  s.app.request(`/admin/queues/api${path}`, { method, headers: { ...auth, 'content-type': 'application/json' }, body: method === 'GET' ? undefined : JSON.stringify(body) });
const status = async (id: string) => {
  const res = await s.app.request(`/v1/jobs/${encodeURIComponent(id)}`, { headers: auth });
  return { code: res.status, body: (await res.json()) as { state?: string; result?: unknown } };
};
async function until(id: string, states = ['completed', 'failed']): Promise<string> {
  for (let i = 0; i < 400; i++) {
    const job = await s.deps.queues.queue(id.startsWith('maintenance') || id.startsWith('repeat:') ? 'maintenance' : 'objects').getJob(id);
    const state = await job?.getState();
    if (state !== undefined && states.includes(state)) return state;
    await sleep(25);
  }
  throw new Error(`${id} not in ${states}`);
}
async function submit(method: string, path: string, body?: string): Promise<string> {
  const res = await s.app.request(`/v1/stores/mem/objects/${path}`, { method, body, headers: auth });
  const { jobId } = (await res.json()) as { jobId: string };
  expect(await until(jobId)).toBe('completed');
  return jobId;
}
const eventTypes = async (id: string) => (await s.deps.bus.readSince(undefined, '*', 100_000)).filter((e) => e.jobId === id).map((e) => e.type);
const allEvents = async () => (await s.deps.bus.readSince(undefined, '*', 100_000)).length;
/** What a stream capped at EVENTS_MAXLEN does to old events under traffic (or a Redis that lost the stream). */
const eventsLeaveTheStream = () => (s.deps.redis as unknown as { xtrim(...a: unknown[]): Promise<number> }).xtrim(`${s.config.queuePrefix}:events`, 'MAXLEN', 0);
const mem = () => s.deps.stores.get('mem')!;
const text = async (key: string) => {
  try {
    const { body } = await mem().read(key);
    const chunks: Buffer[] = [];
    for await (const chunk of body as AsyncIterable<Buffer>) chunks.push(Buffer.from(chunk));
    return Buffer.concat(chunks).toString();
  } catch {
    return undefined;
  }
};

describe('retry of a completed job from the board', () => {
  it('holds: a completed write retried (event in the stream or not) writes nothing and emits nothing again', async () => {
    const w1 = await submit('PUT', 'rw', 'v1');
    await submit('PUT', 'rw', 'v2');
    expect((await board('PUT', `/queues/objects/${w1}/retry`)).status).toBe(204);
    await sleep(300);
    expect(await until(w1)).toBe('completed');
    await eventsLeaveTheStream();
    expect((await board('PUT', `/queues/objects/${w1}/retry`)).status).toBe(204);
    await sleep(300);
    expect(await until(w1)).toBe('completed');
    expect(await text('rw')).toBe('v2');
    expect(await allEvents()).toBe(0);
  });

  it('a completed delete retried once its event left the capped stream does not delete the newer object again, silently', async () => {
    await submit('PUT', 'del', 'v1');
    const d = await submit('DELETE', 'del');
    await submit('PUT', 'del', 'v2');
    // While its event is in the stream the retry answers from it: nothing happens.
    expect((await board('PUT', `/queues/objects/${d}/retry`)).status).toBe(204);
    await sleep(300);
    expect(await until(d)).toBe('completed');
    expect(await text('del')).toBe('v2');
    // Once it left, the retry deletes v2 (written by another job since), and emits nothing: consumers still see v2.
    await eventsLeaveTheStream();
    expect((await board('PUT', `/queues/objects/${d}/retry`)).status).toBe(204);
    await sleep(300);
    expect(await until(d)).toBe('completed');
    expect({ content: await text('del'), events: await allEvents() }).toEqual({ content: 'v2', events: 0 });
  });

  it('a completed copy retried once its event left the stream does not copy again over the newer target', async () => {
    await submit('PUT', 'src', 'source');
    const res = await s.app.request('/v1/stores/mem/objects/dst', { method: 'PUT', headers: { ...auth, 'X-Copy-Source': 'mem/src' } });
    const copyId = ((await res.json()) as { jobId?: string }).jobId;
    expect(copyId).toBeDefined();
    expect(await until(copyId!)).toBe('completed');
    await submit('PUT', 'dst', 'newer');
    await eventsLeaveTheStream();
    expect((await board('PUT', `/queues/objects/${copyId!}/retry`)).status).toBe(204);
    await sleep(300);
    await until(copyId!);
    expect({ content: await text('dst'), events: await allEvents() }).toEqual({ content: 'newer', events: 0 });
  });
});

describe('jobs the board makes', () => {
  it('a job added on the board without an id, and a scheduler run now, get ids GET /v1/jobs/:id finds', async () => {
    const body = { inline: Buffer.from('x').toString('base64'), size: 1, etag: sha256Hex('x') };
    const add = await board('POST', '/queues/objects/add', { name: 'write', data: { store: 'mem', key: 'board-added', body }, options: {} });
    expect(add.status).toBe(200);
    const added = ((await add.json()) as { job: { id: string } }).job.id;
    expect(await until(added)).toBe('completed');
    expect(await eventTypes(added)).toEqual(['object.written']);

    const run = await board('PUT', '/queues/maintenance/job-schedulers/cleanup/run');
    expect(run.status).toBe(200);
    const ran = ((await run.json()) as { job: { id: string } }).job.id;
    await sleep(2000);
    expect(await eventTypes(ran)).toEqual(['cleanup.completed']);
    // Both ran and emitted under their ids ("1", "2": BullMQ's per-queue counters), which the status API cannot name.
    expect({ added, code: (await status(added)).code }).toEqual({ added, code: 200 });
    expect({ ran, code: (await status(ran)).code }).toEqual({ ran, code: 200 });
  });

  it('"Duplicate" makes a job (it re-sends the job with its own jobId: BullMQ answered the existing job, 200, nothing added)', async () => {
    const w = await submit('PUT', 'dup', 'd');
    const view = (await (await board('GET', `/queues/objects/${w}`)).json()) as { job: { name: string; data: unknown; opts: Record<string, unknown> } };
    const dup = await board('POST', '/queues/objects/add', { name: view.job.name, data: view.job.data, options: view.job.opts });
    expect(dup.status).toBe(200);
    const copy = ((await dup.json()) as { job: { id: string } }).job.id;
    expect(copy).not.toBe(w);
    await until(copy);
    // The completed original's body was dropped: the duplicate finds the object holding it, as a retry would.
    expect((await status(copy)).code).toBe(200);
    expect(await text('dup')).toBe('d');
  });
});

describe('other board actions', () => {
  it('remove/promote/retry of an active job are refused (4xx); the job then completes once', async () => {
    const store = mem() as StorageProvider & { write: StorageProvider['write'] };
    const original = store.write.bind(store);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    store.write = (async (...args: Parameters<StorageProvider['write']>) => {
      if (args[0] === 'held') await gate;
      return original(...args);
    }) as StorageProvider['write'];
    try {
      const res = await s.app.request('/v1/stores/mem/objects/held', { method: 'PUT', body: 'h', headers: auth });
      const { jobId } = (await res.json()) as { jobId: string };
      await until(jobId, ['active']);
      const removed = await board('PUT', `/queues/objects/${jobId}/clean`);
      const promoted = await board('PUT', `/queues/objects/${jobId}/promote`);
      const retried = await board('PUT', `/queues/objects/${jobId}/retry`);
      expect(removed.status).toBe(409);
      expect(promoted.status).toBe(400); // before session 19: 500, an error line in the log
      expect(retried.status).toBe(400);
      release();
      expect(await until(jobId)).toBe('completed');
      expect(await eventTypes(jobId)).toEqual(['object.written']);
      expect(await text('held')).toBe('h');
    } finally {
      release();
      store.write = original;
    }
  });

  it('holds: pause keeps jobs waiting (status says so), resume runs them once; promote runs a delayed job once; clean makes status 404', async () => {
    expect((await board('PUT', '/queues/objects/pause')).status).toBe(200);
    const res = await s.app.request('/v1/stores/mem/objects/paused', { method: 'PUT', body: 'p', headers: auth });
    const { jobId } = (await res.json()) as { jobId: string };
    await sleep(500);
    const paused = await status(jobId);
    console.log('paused job state', paused.body.state);
    expect(['waiting', 'paused']).toContain(paused.body.state);
    expect((await board('PUT', '/queues/objects/resume')).status).toBe(200);
    expect(await until(jobId)).toBe('completed');
    expect(await eventTypes(jobId)).toEqual(['object.written']);

    const body = { inline: Buffer.from('late').toString('base64'), size: 4, etag: sha256Hex('late') };
    await s.deps.queues.queue('objects').add('write', { store: 'mem', key: 'delayed', body }, { jobId: 'objects-delayed-1', delay: 600_000, attempts: 3 });
    expect((await board('PUT', '/queues/objects/objects-delayed-1/promote')).status).toBe(204);
    expect(await until('objects-delayed-1')).toBe('completed');
    expect(await eventTypes('objects-delayed-1')).toEqual(['object.written']);
    expect(await text('delayed')).toBe('late');

    await sleep(5_200); // the board cleans jobs finished more than 5 s ago
    expect((await board('PUT', '/queues/objects/clean/completed')).status).toBe(200);
    expect((await status('objects-delayed-1')).code).toBe(404);
  });
});
