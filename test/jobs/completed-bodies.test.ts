/**
 * A completed job keeps no content in Redis: its inline body is dropped from the job's data in the same script as its
 * event, so the completed jobs kept for the retention window (up to 10,000 for a day) hold sizes and etags, not
 * up to 256 KiB of base64 each. A failed job keeps its body: retried from the board, it can still write it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../../src/providers/body.js';
import { RamProvider } from '../../src/providers/ram.js';
import { inlineBody, startPipeline, type Pipeline } from './fixtures/pipeline.js';

const ram = new RamProvider({ maxBytes: 64 * 1024 * 1024 });
let p: Pipeline;

beforeAll(async () => {
  p = await startPipeline('completed-bodies', { stores: new Map([['main', ram]]) });
});

afterAll(async () => {
  await p?.close();
});

async function storedData(jobId: string): Promise<{ raw: string; bytes: number }> {
  const hashKey = `${p.prefix}:objects:${jobId}`;
  const raw = (await p.redis.producer.hget(hashKey, 'data')) ?? '';
  // SAMPLES 0: every field. By default Redis sizes a hash from its first five fields in its table's order, which
  // a server's random hash seed decides: the body's field may go unseen (it did, on one server, every run).
  const bytes = Number(await p.redis.producer.call('MEMORY', 'USAGE', hashKey, 'SAMPLES', '0'));
  return { raw, bytes };
}

describe('completed jobs and their bodies', () => {
  it('drops a 200 KiB inline body from a write job once it completed, keeping its size and etag', async () => {
    const content = 'x'.repeat(200 * 1024);
    const { jobId } = await p.queues.enqueue('write', { store: 'main', key: 'big/inline.txt', body: inlineBody(content) });
    const before = await storedData(jobId);
    expect(before.raw).toContain('"inline"');
    expect(before.bytes).toBeGreaterThan(200 * 1024);

    await p.startWorkers();
    await p.waitForEvent('object.written', jobId);
    await p.waitForJobState(jobId, 'completed');

    const after = await storedData(jobId);
    expect(JSON.parse(after.raw)).toEqual({ store: 'main', key: 'big/inline.txt', body: { size: content.length, etag: sha256Hex(content) } });
    expect(after.bytes).toBeLessThan(4096);
    expect((await ram.stat('big/inline.txt')).etag).toBe(sha256Hex(content));
    const job = await p.queues.getJob(jobId);
    expect(job?.returnvalue).toMatchObject({ key: 'big/inline.txt', etag: sha256Hex(content) });
  });

  it('drops the inline body of a version job too', async () => {
    const { jobId } = await p.queues.enqueue('version', { store: 'main', key: 'doc', body: inlineBody('v1'), message: 'first' });
    await p.waitForJobState(jobId, 'completed');
    const data = JSON.parse((await storedData(jobId)).raw) as { body: unknown; message: string };
    expect(data.body).toEqual({ size: 2, etag: sha256Hex('v1') });
    expect(data.message).toBe('first');
  });

  it('keeps the body of a job that failed, for a retry from the board', async () => {
    await ram.write('guarded', 'current');
    const { jobId } = await p.queues.enqueue('write', { store: 'main', key: 'guarded', body: inlineBody('next'), ifMatch: 'no-such-etag' });
    await p.waitForJobState(jobId, 'failed');
    expect(JSON.parse((await storedData(jobId)).raw).body).toEqual(inlineBody('next'));
  });

  it('a completed job retried from the board answers from its event without the body, and emits nothing more', async () => {
    const { jobId } = await p.queues.enqueue('write', { store: 'main', key: 'again', body: inlineBody('once') });
    await p.waitForJobState(jobId, 'completed');
    await ram.write('again', 'changed since');

    const job = await p.queues.getJob(jobId);
    await job!.retry('completed');
    await p.waitForJobState(jobId, 'completed');

    expect(((await p.queues.getJob(jobId))!.returnvalue as { etag: string }).etag).toBe(sha256Hex('once'));
    expect((await ram.stat('again')).etag).toBe(sha256Hex('changed since')); // not written over with nothing
    expect(await p.eventsOf(jobId, 'object.written')).toHaveLength(1);
  });

  it('retried from the board after its event left the capped stream, a completed job answers from the result kept with it', async () => {
    const { jobId } = await p.queues.enqueue('write', { store: 'main', key: 'trimmed', body: inlineBody('first') });
    await p.waitForJobState(jobId, 'completed');
    await p.redis.worker.xtrim(p.bus.streamKey, 'MAXLEN', 0);
    await ram.write('trimmed', 'written since');

    await (await p.queues.getJob(jobId))!.retry('completed');
    await p.waitForJobState(jobId, 'completed');

    expect(((await p.queues.getJob(jobId))!.returnvalue as { etag: string }).etag).toBe(sha256Hex('first'));
    expect((await ram.stat('trimmed')).etag).toBe(sha256Hex('written since'));
    expect(await p.eventsOf(jobId, 'job.failed')).toEqual([]);
  });

  it('run again as a first attempt, a job whose body was dropped answers from its journaled result; without one, from the target or NOT_FOUND', async () => {
    const journaled = await p.queues.enqueue('write', { store: 'main', key: 'journaled', body: inlineBody('noted') });
    const held = await p.queues.enqueue('write', { store: 'main', key: 'held', body: inlineBody('kept') });
    const lost = await p.queues.enqueue('write', { store: 'main', key: 'lost', body: inlineBody('gone') });
    for (const { jobId } of [journaled, held, lost]) await p.waitForJobState(jobId, 'completed');
    await ram.write('journaled', 'changed since');
    await ram.write('lost', 'someone else');
    // Without the journal (as a job completed before it was kept with the event), only the target can tell.
    for (const { jobId } of [held, lost]) await p.redis.worker.hdel(`${p.prefix}:objects:${jobId}`, 'kyozoApplied');

    const again = { resetAttemptsStarted: true, resetAttemptsMade: true };
    for (const { jobId } of [journaled, held, lost]) await (await p.queues.getJob(jobId))!.retry('completed', again);
    await p.waitForJobState(journaled.jobId, 'completed');
    await p.waitForJobState(held.jobId, 'completed');
    await p.waitForJobState(lost.jobId, 'failed');

    expect(((await p.queues.getJob(journaled.jobId))!.returnvalue as { etag: string }).etag).toBe(sha256Hex('noted'));
    expect((await ram.stat('journaled')).etag).toBe(sha256Hex('changed since'));
    expect(((await p.queues.getJob(held.jobId))!.returnvalue as { etag: string }).etag).toBe(sha256Hex('kept'));
    expect((await p.queues.getJob(lost.jobId))!.failedReason).toMatch(/NOT_FOUND.*dropped/);
    expect((await ram.stat('lost')).etag).toBe(sha256Hex('someone else'));
  });
});
