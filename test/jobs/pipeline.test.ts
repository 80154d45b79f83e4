import { Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Job } from 'bullmq';
import { StagedOwners } from '../../src/jobs/staged-owners.js';
import { sha256Hex } from '../../src/providers/body.js';
import { InvalidArgumentError, InvalidKeyError, ProviderUnavailableError } from '../../src/providers/errors.js';
import { RamProvider } from '../../src/providers/ram.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { jobIdFor } from '../../src/jobs/job-id.js';
import { createQueues } from '../../src/jobs/queue.js';
import { isStaged } from '../../src/jobs/staging.js';
import { closeRedis, createRedis } from '../../src/redis.js';
import { interceptMethod } from '../support/intercept.js';
import { failingFirst, inlineBody, startPipeline, waitFor, type Pipeline } from './fixtures/pipeline.js';

describe('job pipeline', () => {
  let p: Pipeline;
  let ram: RamProvider;
  let flaky: { provider: StorageProvider; calls: number[] };
  const retryDelays: number[] = [];

  beforeAll(async () => {
    ram = new RamProvider({ maxBytes: 64 * 1024 * 1024 });
    flaky = failingFirst(new RamProvider({ maxBytes: 1024 * 1024 }), 'write', 2, () => new ProviderUnavailableError('backend is down'));
    p = await startPipeline('pipeline', {
      stores: new Map<string, StorageProvider>([
        ['main', ram],
        ['flaky', flaky.provider],
      ]),
      backoffDelayMs: 50,
    });
    const workers = await p.startWorkers();
    workers.workers[0]!.on('failed', (job: Job | undefined) => {
      if (job?.data?.store === 'flaky') retryDelays.push(job.delay);
    });
  });

  afterAll(async () => {
    await p?.close();
  });

  it('runs a write job through a real worker: object stored, etag right, one object.written', async () => {
    const { jobId } = await p.queues.enqueue('write', { store: 'main', key: 'docs/hello.txt', body: inlineBody('hello'), contentType: 'text/plain' });
    const event = await p.waitForEvent('object.written', jobId);
    await p.waitForJobState(jobId, 'completed');

    const info = await ram.stat('docs/hello.txt');
    expect(info.etag).toBe(sha256Hex('hello'));
    expect(info.contentType).toBe('text/plain');
    expect(event).toMatchObject({ type: 'object.written', store: 'main', key: 'docs/hello.txt', jobId, data: { etag: sha256Hex('hello') } });
    expect(await p.eventsOf(jobId)).toHaveLength(1);
    const job = await p.queues.getJob(jobId);
    expect(job?.returnvalue).toMatchObject({ key: 'docs/hello.txt', etag: sha256Hex('hello') });
  });

  it('retries ProviderUnavailableError with growing backoff and completes on attempt 3 with one event', async () => {
    const { jobId } = await p.queues.enqueue('write', { store: 'flaky', key: 'retry/me', body: inlineBody('third time lucky') });
    await p.waitForEvent('object.written', jobId);
    await p.waitForJobState(jobId, 'completed');

    expect(flaky.calls).toHaveLength(3);
    expect(retryDelays).toHaveLength(2);
    expect(retryDelays[1]!).toBeGreaterThan(retryDelays[0]!);
    const job = await p.queues.getJob(jobId);
    expect(job?.attemptsStarted).toBe(3);
    expect(await p.eventsOf(jobId)).toHaveLength(1);
    expect((await flaky.provider.stat('retry/me')).etag).toBe(sha256Hex('third time lucky'));
  });

  it('refuses an invalid key at enqueue, before Redis', async () => {
    const before = await p.queues.queue('objects').count();
    await expect(p.queues.enqueue('write', { store: 'main', key: 'a/../b', body: inlineBody('x') })).rejects.toBeInstanceOf(InvalidKeyError);
    await expect(p.queues.enqueue('write', { store: 'main', key: 'ok', body: { inline: 'eA==', size: 1, etag: 'nope' } })).rejects.toBeInstanceOf(
      InvalidArgumentError,
    );
    const sizeLies = { ...inlineBody('hello'), size: 6 };
    await expect(p.queues.enqueue('write', { store: 'main', key: 'ok', body: sizeLies })).rejects.toThrow(/size does not match/);
    // A line break is skipped by the decoder but counted by the text's length: the size is judged on the decoded bytes.
    const wrapped = { ...inlineBody('hello'), inline: 'aGVs\nbG8=', size: 6 };
    await expect(p.queues.enqueue('write', { store: 'main', key: 'ok', body: wrapped })).rejects.toThrow(/size does not match/);
    expect(await p.queues.queue('objects').count()).toBe(before);
  });

  it('fails a job with an invalid key at once, without retries, with one job.failed', async () => {
    // A producer that skips `enqueue` (another service, Bull Board) can still put such a job on the queue.
    const job = await p.queues.queue('objects').add('write', { store: 'main', key: 'a/../b', body: inlineBody('x') }, { jobId: 'objects-badkey' });
    const event = await p.waitForEvent('job.failed', job.id!);
    await p.waitForJobState(job.id!, 'failed');

    const failed = await p.queues.getJob(job.id!);
    expect(failed?.attemptsStarted).toBe(1);
    expect(failed?.failedReason).toMatch(/^INVALID_KEY: /);
    expect(event.data).toMatchObject({ name: 'write', code: 'INVALID_KEY', attemptsMade: 1 });
    expect(await p.eventsOf(job.id!)).toHaveLength(1);
  });

  it('fails a job whose inline body does not match its etag at once, writing nothing', async () => {
    // Another producer's job: the etag is what a retry would recognise its work by.
    const body = { ...inlineBody('hello'), etag: sha256Hex('something else') };
    const { jobId } = await p.queues.enqueue('write', { store: 'main', key: 'etag-lies', body });
    const event = await p.waitForEvent('job.failed', jobId);
    expect(event.data).toMatchObject({ code: 'INVALID_ARGUMENT', attemptsMade: 1 });
    await expect(ram.stat('etag-lies')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('fails a write whose ifMatch does not match at once, with PRECONDITION_FAILED', async () => {
    await ram.write('guarded', 'v1');
    const { jobId } = await p.queues.enqueue('write', { store: 'main', key: 'guarded', body: inlineBody('v2'), ifMatch: sha256Hex('other') });
    const event = await p.waitForEvent('job.failed', jobId);
    expect(event.data).toMatchObject({ code: 'PRECONDITION_FAILED', attemptsMade: 1 });
    expect((await ram.stat('guarded')).etag).toBe(sha256Hex('v1'));
  });

  it('emits job.failed again when a failed job retried from the board fails again', async () => {
    await ram.write('retried', 'v1');
    const { jobId } = await p.queues.enqueue('write', { store: 'main', key: 'retried', body: inlineBody('v2'), ifMatch: sha256Hex('other') });
    await p.waitForEvent('job.failed', jobId);
    await p.waitForJobState(jobId, 'failed');

    await (await p.queues.getJob(jobId))!.retry('failed'); // what Bull Board's "Retry" does
    await waitFor(async () => (await p.eventsOf(jobId, 'job.failed')).length === 2, { what: 'a second job.failed' });
    await p.waitForJobState(jobId, 'failed');
    const [first, second] = await p.eventsOf(jobId, 'job.failed');
    expect(first!.data).toMatchObject({ attemptsMade: 1 });
    expect(second!.data).toMatchObject({ code: 'PRECONDITION_FAILED', attemptsMade: 2 });
  });

  it('an idempotency key names the same job whatever order the request\'s metadata and If-Match etags came in', () => {
    const body = inlineBody('x');
    const one = jobIdFor('objects', 'write', { store: 'main', key: 'k', body, metadata: { a: '1', b: '2' }, ifMatch: ['e1', 'e2'] }, 'same');
    const other = jobIdFor('objects', 'write', { store: 'main', key: 'k', body, metadata: { b: '2', a: '1' }, ifMatch: ['e2', 'e1'] }, 'same');
    expect(other).toBe(one);
    expect(jobIdFor('objects', 'write', { store: 'main', key: 'k', body, metadata: { a: '1', b: '3' } }, 'same')).not.toBe(one);
  });

  it('an idempotency key names the same job whether the request named the default Content-Type or left it out', () => {
    const body = inlineBody('x');
    const untyped = jobIdFor('objects', 'version', { store: 'main', key: 'k', body, message: 'm' }, 'same');
    expect(jobIdFor('objects', 'version', { store: 'main', key: 'k', body, message: 'm', contentType: 'application/octet-stream' }, 'same')).toBe(untyped);
    expect(jobIdFor('objects', 'version', { store: 'main', key: 'k', body, message: 'm', contentType: ' application/octet-stream ' }, 'same')).toBe(untyped);
    expect(jobIdFor('objects', 'version', { store: 'main', key: 'k', body, message: 'm', contentType: 'text/plain' }, 'same')).not.toBe(untyped);
    // A request without a type keeps the id it had before types were compared this way (a retry across the upgrade).
    const before = createHash('sha256').update(`same\n${JSON.stringify(['version', { key: 'k', message: 'm', store: 'main' }, body.etag])}`).digest('hex');
    expect(untyped).toBe(`objects-k${before.slice(0, 40)}`);
  });

  it('makes one job and one version for an idempotency key enqueued twice', async () => {
    const payload = { store: 'main', key: 'idem/doc', body: inlineBody('once'), message: 'first draft', author: { name: 'Ada' } };
    const first = await p.queues.enqueue('version', payload, { idempotencyKey: 'req-42' });
    const second = await p.queues.enqueue('version', payload, { idempotencyKey: 'req-42' });
    expect(second.jobId).toBe(first.jobId);
    await p.waitForEvent('version.created', first.jobId);
    await p.waitForJobState(first.jobId, 'completed');

    const third = await p.queues.enqueue('version', payload, { idempotencyKey: 'req-42' });
    expect(third.jobId).toBe(first.jobId);
    expect((await ram.listVersions('idem/doc')).items).toHaveLength(1);
    expect(await p.eventsOf(first.jobId)).toHaveLength(1);
  });

  it('stages a 5 MiB body: the job hash stays under 4 KiB and the staged blob is gone after completion', async () => {
    const content = Buffer.alloc(5 * 1024 * 1024, 7);
    const body = await p.staging.stageBody(Readable.from([content.subarray(0, 3_000_000), content.subarray(3_000_000)]));
    expect(body).toMatchObject({ size: content.length, etag: sha256Hex(content) });
    if (!isStaged(body)) throw new Error('a 5 MiB body must be staged');
    expect((await p.stagingProvider.stat(body.stagedKey)).size).toBe(content.length);

    const { jobId } = await p.queues.enqueue('write', { store: 'main', key: 'big/blob.bin', body });
    const owners = new StagedOwners(p.redis.producer, p.prefix);
    expect(await owners.ownerOf(body.stagedKey)).toBe(jobId); // cleanup spares the body while the job is to run
    const hashKey = `${p.prefix}:objects:${jobId}`;
    // SAMPLES 0: every field. By default Redis sizes a hash from its first five fields in its table's order, which
    // a server's random hash seed decides: the body's field may go unseen (it did, on one server, every run).
    const bytes = Number(await p.redis.producer.call('MEMORY', 'USAGE', hashKey, 'SAMPLES', '0'));
    expect(bytes).toBeGreaterThan(0);
    expect(bytes).toBeLessThan(4096);

    await p.waitForEvent('object.written', jobId);
    expect((await ram.stat('big/blob.bin')).etag).toBe(sha256Hex(content));
    await expect(p.stagingProvider.stat(body.stagedKey)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(await owners.ownerOf(body.stagedKey)).toBeUndefined();
  });

  it('fails a write whose staged body was damaged in staging at once, writing nothing: the store checks the etag', async () => {
    const content = Buffer.alloc(1024 * 1024, 5);
    const body = await p.staging.stageBody(Readable.from([content]), { maxBytes: 2 * content.length });
    if (!isStaged(body)) throw new Error('a 1 MiB body must be staged');
    // The same size, other bytes: a disk fault, or someone else's file under the same name.
    await p.stagingProvider.write(body.stagedKey, Buffer.alloc(content.length, 6));
    const { jobId } = await p.queues.enqueue('write', { store: 'main', key: 'staged/damaged', body });
    const event = await p.waitForEvent('job.failed', jobId);
    expect(event.data).toMatchObject({ code: 'INVALID_ARGUMENT', attemptsMade: 1 });
    expect((event.data as { reason: string }).reason).toMatch(/not the expected/);
    await expect(ram.stat('staged/damaged')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('a create-only write retried after another job created the key with the same bytes fails; it does not claim that creation', async () => {
    const store = new RamProvider({ maxBytes: 1024 * 1024 });
    let failedFirst = false;
    let createdByB!: () => void;
    const bCreated = new Promise<void>((resolve) => (createdByB = resolve));
    p.stores.set(
      'lease',
      interceptMethod(store, 'write', (write) => async (key, content, opts) => {
        if (opts?.metadata?.owner === 'b') return write(key, content, opts).finally(createdByB);
        if (!failedFirst) {
          failedFirst = true;
          throw new ProviderUnavailableError('timed out, nothing written');
        }
        await bCreated; // a's retry comes after b's creation
        return write(key, content, opts);
      }),
    );
    const a = await p.queues.enqueue('write', { store: 'lease', key: 'claim', body: inlineBody('same bytes'), metadata: { owner: 'a' }, ifNoneMatch: '*' });
    await waitFor(() => failedFirst, { what: "a's first attempt failed" });
    const b = await p.queues.enqueue('write', { store: 'lease', key: 'claim', body: inlineBody('same bytes'), metadata: { owner: 'b' }, ifNoneMatch: '*' });
    await p.waitForJobState(b.jobId, 'completed');
    const failed = await p.waitForEvent('job.failed', a.jobId);
    expect(failed.data).toMatchObject({ code: 'PRECONDITION_FAILED' });
    expect(await p.eventsOf(a.jobId, 'object.written')).toEqual([]);
    expect((await store.stat('claim')).metadata).toEqual({ owner: 'b' });
  });

  it('runs delete, version and restore jobs with their events', async () => {
    const v1 = await p.queues.enqueue('version', { store: 'main', key: 'life/cycle', body: inlineBody('one'), message: 'v1' });
    const created = await p.waitForEvent('version.created', v1.jobId);
    const v2 = await p.queues.enqueue('version', { store: 'main', key: 'life/cycle', body: inlineBody('two'), message: 'v2' });
    await p.waitForEvent('version.created', v2.jobId);

    const versionId = (created.data as { versionId: string }).versionId;
    const restore = await p.queues.enqueue('restore', { store: 'main', key: 'life/cycle', versionId });
    const restored = await p.waitForEvent('version.restored', restore.jobId);
    expect(restored.data).toMatchObject({ etag: sha256Hex('one'), message: `restore ${versionId}`, restoredFrom: versionId });
    expect((await ram.stat('life/cycle')).etag).toBe(sha256Hex('one'));

    const del = await p.queues.enqueue('delete', { store: 'main', key: 'life/cycle' });
    const deleted = await p.waitForEvent('object.deleted', del.jobId);
    expect(deleted.data).toEqual({ key: 'life/cycle', deleted: true, allVersions: false });
    await expect(ram.stat('life/cycle')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect((await ram.listVersions('life/cycle')).items).toHaveLength(3);
  });

  it('fails a job for an unknown store as NOT_FOUND without retrying', async () => {
    const { jobId } = await p.queues.enqueue('delete', { store: 'nowhere', key: 'x' });
    const event = await p.waitForEvent('job.failed', jobId);
    expect(event).toMatchObject({ store: 'nowhere', key: 'x', data: { code: 'NOT_FOUND', attemptsMade: 1 } });
  });

  it('answers ProviderUnavailableError at once when Redis cannot be reached', async () => {
    // Nothing listens on port 1: the producer connection keeps reconnecting and has no offline queue.
    const unreachable = createRedis({ redis: { url: 'redis://127.0.0.1:1', explicit: true } }, 'producer');
    unreachable.on('error', () => undefined);
    const queues = createQueues({ connection: unreachable, prefix: p.prefix, attempts: 1 });
    await expect(queues.enqueue('delete', { store: 'main', key: 'x' })).rejects.toBeInstanceOf(ProviderUnavailableError);
    await queues.close();
    await closeRedis(unreachable);
  });
});
