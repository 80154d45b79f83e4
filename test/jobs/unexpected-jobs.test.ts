/**
 * Jobs the worker did not expect, added straight to the queues (another producer, an older or newer version
 * during a rolling deploy, anyone with Redis access). Each must fail at once (unrecoverable), with one job.failed
 * carrying a clear reason, no retries, no success event and nothing written.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventEnvelope } from '../../src/events/bus.js';
import { sha256Hex } from '../../src/providers/body.js';
import { startTestService, type TestService } from '../support/service.js';

const inline = (t: string | Buffer) => {
  const b = Buffer.isBuffer(t) ? t : Buffer.from(t);
  return { inline: b.toString('base64'), size: b.length, etag: sha256Hex(b) };
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function finished(s: TestService, queue: 'objects' | 'maintenance', id: string) {
  const q = s.deps.queues.queue(queue);
  for (let i = 0; i < 400; i++) {
    const job = await q.getJob(id);
    const state = await job?.getState();
    if (state === 'completed' || state === 'failed') {
      await sleep(100); // its event, emitted ahead of the state, is in the stream by now; let a wrong retry show
      return { job: (await q.getJob(id))!, state };
    }
    await sleep(25);
  }
  throw new Error(`${id} did not finish`);
}

const eventsOf = async (s: TestService, id: string): Promise<EventEnvelope[]> =>
  (await s.deps.bus.readSince(undefined, '*', 100_000)).filter((e) => e.jobId === id);

describe('malformed jobs on a real worker', () => {
  let s: TestService;
  beforeAll(async () => {
    s = await startTestService('review-unexpected');
  });
  afterAll(async () => {
    await s?.close();
  });

  async function expectCleanFailure(queue: 'objects' | 'maintenance', name: string, data: unknown, jobId: string, reason: RegExp) {
    await s.deps.queues.queue(queue).add(name, data as never, { jobId });
    const { job, state } = await finished(s, queue, jobId);
    expect(state).toBe('failed');
    expect(job.attemptsStarted).toBe(1);
    expect(job.failedReason).toMatch(reason);
    const events = await eventsOf(s, jobId);
    expect(events.map((e) => e.type)).toEqual(['job.failed']);
    return events[0]!;
  }

  it('holds: wrong types, missing fields, null/string data, a Buffer body, a staged path outside staging, a gone blob, unknown names', async () => {
    await expectCleanFailure('objects', 'write', { store: 5, key: [], body: 'x' }, 'objects-wt', /^INVALID_ARGUMENT: write job: store: /);
    await expectCleanFailure('objects', 'delete', {}, 'objects-missing', /^INVALID_ARGUMENT: delete job: store: /);
    await expectCleanFailure('objects', 'write', null, 'objects-null', /^INVALID_ARGUMENT: write job: /);
    await expectCleanFailure('objects', 'write', 'hello', 'objects-str', /^INVALID_ARGUMENT: write job: /);
    const asBuffer = { store: 'files', key: 'buf', body: { inline: Buffer.from('abc'), size: 3, etag: sha256Hex('abc') } };
    await expectCleanFailure('objects', 'write', asBuffer, 'objects-buf', /^INVALID_ARGUMENT: write job: body/);
    for (const stagedKey of ['../../etc/passwd', 'staging/../../../etc/passwd', '/etc/passwd']) {
      const data = { store: 'files', key: 'pw', body: { stagedKey, size: 3, etag: sha256Hex('abc') } };
      await expectCleanFailure('objects', 'write', data, `objects-pw${stagedKey.length}`, /not a staging key/);
    }
    const gone = { store: 'files', key: 'gone', body: { stagedKey: 'staging/00000000-0000-4000-8000-000000000000', size: 3, etag: sha256Hex('abc') } };
    await expectCleanFailure('objects', 'write', gone, 'objects-gone', /^NOT_FOUND: the staged body of this job is gone/);
    await expectCleanFailure('objects', 'frobnicate', { store: 'files' }, 'objects-unknown', /^INVALID_ARGUMENT: no job type named "frobnicate"/);
    await expectCleanFailure('objects', '__proto__', {}, 'objects-proto', /^INVALID_ARGUMENT: no job type named/);
    await expectCleanFailure('maintenance', 'deliver', {}, 'maintenance-deliver', /^INVALID_ARGUMENT: no job type named/);
    // A newer producer's payload with a field this worker does not know: refused clearly (strict schemas), not half-understood.
    await expectCleanFailure('objects', 'write', { store: 'files', key: 'extra', body: inline('e'), futureField: 1 }, 'objects-extra', /Unrecognized key: "futureField"/);
    for (const key of ['buf', 'pw', 'gone', 'extra']) await expect(s.deps.stores.get('files')!.stat(key)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('refuses a job of the other family put in the wrong queue (it ran: a cleanup on the objects worker, a write on maintenance)', async () => {
    await expectCleanFailure('objects', 'cleanup', {}, 'objects-cleanup-in-objects', /^INVALID_ARGUMENT: /);
    await expectCleanFailure('maintenance', 'write', { store: 'files', key: 'in-maintenance', body: inline('m') }, 'maintenance-write-in-maint', /^INVALID_ARGUMENT: /);
    await expect(s.deps.stores.get('files')!.stat('in-maintenance')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('does not run a job whose id is none the service gives: its status would be 404 while it writes and emits under that id', async () => {
    const o = s.deps.queues.queue('objects');
    const m = s.deps.queues.queue('maintenance');
    const added = [
      ['objects', await o.add('write', { store: 'files', key: 'custom-id', body: inline('c') }, { jobId: 'my-custom' })],
      ['objects', await o.add('write', { store: 'files', key: 'auto-id', body: inline('a') })], // BullMQ's counter: "1", "2"...
      ['maintenance', await m.add('write', { store: 'files', key: 'cross-id', body: inline('x') }, { jobId: 'objects-crossid' })],
    ] as const;
    for (const [queue, job] of added) {
      const { state } = await finished(s, queue, job.id!);
      const status = await s.app.request(`/v1/jobs/${encodeURIComponent(job.id!)}`);
      // Either refused (failed, nothing written) or findable by the id its events carry; it was neither.
      expect({ id: job.id, ran: state === 'completed', status: status.status }).toEqual({ id: job.id, ran: false, status: status.status });
    }
    for (const key of ['custom-id', 'auto-id', 'cross-id']) await expect(s.deps.stores.get('files')!.stat(key)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it("keeps a malformed job's junk out of its job.failed event (a 3 MB key, a 3 MB store name, a 2 MB field name went into the stream and every webhook)", async () => {
    const events = [
      await expectCleanFailure('objects', 'write', { store: 'files', key: 'k'.repeat(3_000_000), body: inline('h') }, 'objects-hugekey', /^INVALID_KEY: /),
      await expectCleanFailure('objects', 'delete', { store: 's'.repeat(3_000_000), key: 'x' }, 'objects-hugestore', /^INVALID_ARGUMENT: /),
      await expectCleanFailure('objects', 'write', { store: 'files', key: 'x', body: inline('h'), ['z'.repeat(2_000_000)]: 1 }, 'objects-hugefield', /^INVALID_ARGUMENT: /),
    ];
    const sizes = events.map((event) => `${event.jobId}: ${JSON.stringify(event).length} bytes`);
    expect(sizes.filter((size) => Number(/(\d+) bytes/.exec(size)![1]) >= 16 * 1024)).toEqual([]);
    const status = await s.app.request('/v1/jobs/objects-hugefield');
    expect((await status.text()).length).toBeLessThan(16 * 1024);
  });
});

describe('a job hash whose data is not JSON (written into Redis by hand)', () => {
  let s: TestService;
  beforeAll(async () => {
    s = await startTestService('review-raw-hash', {}, { worker: false });
  });
  afterAll(async () => {
    await s?.close();
  });

  it('GET /v1/jobs/:id says the job cannot be read (DATA_CORRUPTED), not a failure outside the contract', async () => {
    const q = s.deps.queues.queue('objects');
    await q.add('write', {}, { jobId: 'objects-rawdata', delay: 60_000 });
    await (s.deps.redis as unknown as { hset(...a: string[]): Promise<number> }).hset(q.toKey('objects-rawdata'), 'data', '{not json');
    const res = await s.app.request('/v1/jobs/objects-rawdata');
    // Before session 19: 500 INTERNAL ("failed outside the error contract").
    expect(res.status).toBe(500);
    expect(((await res.json()) as { error: { code: string; message: string } }).error).toMatchObject({ code: 'DATA_CORRUPTED', message: expect.stringMatching(/objects-rawdata.*not JSON/) });
  });
});
