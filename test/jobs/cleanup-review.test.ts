/**
 * `cleanup` and data it must never remove (session 19 review). The first two describes pinned defects fixed that
 * session (a version an accepted restore reads; a staging store that is down stopped the service-wide parts); the
 * rest confirm what holds.
 */
import { Queue, Worker } from 'bullmq';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { cleanupJob } from '../../src/jobs/cleanup.js';
import { createQueues } from '../../src/jobs/queue.js';
import { restoreJob } from '../../src/jobs/restore.js';
import { VersionPins } from '../../src/jobs/version-pins.js';
import { sha256Hex } from '../../src/providers/body.js';
import { DiskProvider } from '../../src/providers/disk.js';
import { ProviderUnavailableError } from '../../src/providers/errors.js';
import { RamProvider } from '../../src/providers/ram.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { createHybridProvider } from '../../src/providers/hybrid.js';
import { closeRedis } from '../../src/redis.js';
import { beforeCalls, interceptMethod } from '../support/intercept.js';
import { connectRedis, deleteKeys, uniquePrefix } from '../support/redis.js';
import { maintenanceFixture, versionsAt, type MaintenanceFixture } from './fixtures/maintenance.js';
import { waitFor } from './fixtures/pipeline.js';

const DAY_MS = 24 * 3600 * 1000;
let f: MaintenanceFixture;

beforeAll(async () => {
  f = await maintenanceFixture('cleanup-review');
});
afterEach(() => vi.useRealTimers());
afterAll(async () => {
  await f?.close();
});

const messages = async (provider: StorageProvider, key: string) => {
  const all: (string | undefined)[] = [];
  let cursor: string | undefined;
  do {
    const page = await provider.listVersions(key, { cursor, limit: 1000 });
    all.push(...page.items.map((version) => version.message));
    cursor = page.cursor;
  } while (cursor !== undefined);
  return all;
};

describe('version retention and restores still to run', () => {
  it('keeps the version a waiting restore job (accepted 202) will restore', async () => {
    const ram = new RamProvider({ maxBytes: 1024 * 1024 });
    const queues = createQueues({ connection: f.redis.producer, prefix: f.redis.prefix, attempts: 1 });
    try {
      await versionsAt(ram, 'doc', ['v1', 'v2', 'v3']);
      const v1 = (await ram.listVersions('doc')).items.find((version) => version.message === 'v1')!;
      // The API checked the version exists (requireVersion) and accepted the restore: it waits behind other writes.
      const payload = { store: 'mem', key: 'doc', versionId: v1.versionId };
      const { jobId } = await queues.enqueue('restore', payload);
      expect(await queues.queue('objects').getJobState(jobId)).toBe('waiting');
      // A write ahead of it in the queue makes a fourth version; the hourly cleanup (VERSION_RETENTION_COUNT=3) runs.
      await ram.createVersion('doc', 'v4', { message: 'v4' });
      const stores = new Map<string, StorageProvider>([['mem', ram]]);
      await cleanupJob.handle({}, f.context(stores, { queues: queues.all(), settings: { versionRetentionCount: 3 } }));

      // The restore then runs: it must find the version it was accepted for.
      const { result } = await restoreJob.handle(payload, f.context(stores, { jobId, name: 'restore' }));
      expect(result.etag).toBe(sha256Hex('v1'));
    } finally {
      await queues.close();
    }
  });

  it('keeps the version a running restore is reading (cleanup between its stat and its restore)', async () => {
    const ram = new RamProvider({ maxBytes: 1024 * 1024 });
    const queues = createQueues({ connection: f.redis.producer, prefix: f.redis.prefix, attempts: 1 });
    try {
      await versionsAt(ram, 'doc', ['v1', 'v2', 'v3']);
      const v1 = (await ram.listVersions('doc')).items.find((version) => version.message === 'v1')!;
      const payload = { store: 'mem', key: 'doc', versionId: v1.versionId };
      const { jobId } = await queues.enqueue('restore', payload);
      let cleaned = false;
      const racing = interceptMethod(ram, 'restoreVersion', (original) => async (...args) => {
        if (!cleaned) {
          cleaned = true;
          // A version made meanwhile and the hourly cleanup, while this restore is between its stat and its restore.
          await ram.createVersion('doc', 'v4', { message: 'v4' });
          await cleanupJob.handle({}, f.context(new Map([['mem', ram]]), { queues: queues.all(), settings: { versionRetentionCount: 3 } }));
        }
        return original(...args);
      });
      const { result } = await restoreJob.handle(payload, f.context(new Map([['mem', racing]]), { jobId, name: 'restore' }));
      expect(result.etag).toBe(sha256Hex('v1'));
      // Once its job is gone, the version is retention's again, and the pin goes with the next cleanup.
      await queues.queue('objects').remove(jobId);
      const { result: after } = await cleanupJob.handle({}, f.context(new Map([['mem', ram]]), { queues: queues.all(), settings: { versionRetentionCount: 3 } }));
      expect(after.stores.mem!.versionsDeleted).toBeGreaterThan(0);
      expect(await messages(ram, 'doc')).not.toContain('v1');
      expect(await new VersionPins(f.redis.producer, f.redis.prefix).pinnedBy(payload)).toBeUndefined();
    } finally {
      await queues.close();
    }
  });
});

describe('a staging store that is down', () => {
  it('reports the staging outage and still removes old jobs and trims the events (as for a store that is down)', async () => {
    const queue = new Queue('objects', { connection: f.redis.worker, prefix: `${f.redis.prefix}s` });
    const worker = new Worker('objects', async () => 'done', { connection: f.redis.worker, prefix: `${f.redis.prefix}s` });
    try {
      for (let i = 0; i < 3; i++) await queue.add('probe', { i });
      await waitFor(async () => (await queue.getCompletedCount()) === 3, { what: '3 completed jobs' });
      for (let i = 0; i < 30; i++) await f.bus.emit({ type: 'object.written', key: `k${i}`, data: {} });
      const ram = new RamProvider({ maxBytes: 1024 * 1024 });
      const stagingDown = interceptMethod(new DiskProvider({ root: await f.tempDir('staging-down'), fsync: false }), 'list', () => async () => {
        throw new ProviderUnavailableError('list "staging": EIO');
      });
      const ctx = f.context(new Map([['mem', ram]]), { queues: [queue], settings: { completedJobAgeSeconds: 0, eventsMaxLen: 10 } });
      ctx.maintenance!.stagingProvider = stagingDown;
      // Before session 19: the whole job failed as unavailable, and is retried (every minute, for UNAVAILABLE_RETRY_SECONDS), each
      // retry walking every store's versions again, while old jobs and the events stream are never trimmed.
      const outcome = await cleanupJob.handle({}, ctx).then(
        (done) => done.result,
        (error: unknown) => error,
      );
      expect(outcome).not.toBeInstanceOf(Error);
      expect(await queue.getCompletedCount()).toBe(0);
      expect(await f.redis.producer.xlen(f.bus.streamKey)).toBe(10);
    } finally {
      await worker.close();
      await queue.close();
    }
  });
});

describe('holds', () => {
  it('keeps the bodies of delayed (parked), active and failed jobs past STAGING_TTL; removes a repeat body released by the API and one whose job is gone', async () => {
    const prefix = `${f.redis.prefix}h`;
    const queues = createQueues({ connection: f.redis.producer, prefix, attempts: 1 });
    const old = Date.now() - 3 * 3600 * 1000;
    const stage = async (n: number) => {
      const stagedKey = `staging/00000000-0000-4000-8000-00000000010${n}`;
      const content = `body ${n} of a job`;
      vi.useFakeTimers({ toFake: ['Date'] });
      vi.setSystemTime(old);
      await f.stagingProvider.write(stagedKey, content);
      vi.useRealTimers();
      return { stagedKey, size: content.length, etag: sha256Hex(content) };
    };
    try {
      const delayed = await queues.enqueue('write', { store: 'mem', key: 'a', body: await stage(1) });
      const active = await queues.enqueue('write', { store: 'mem', key: 'b', body: await stage(2) });
      const failed = await queues.enqueue('write', { store: 'mem', key: 'c', body: await stage(3) });
      const objects = queues.queue('objects');
      // Move them by hand to the states a worker leaves them in.
      const worker = new Worker('objects', null, { connection: f.redis.worker, prefix });
      const token = 't';
      const taken = [await worker.getNextJob(token), await worker.getNextJob(token), await worker.getNextJob(token)];
      expect(taken.map((job) => job?.id)).toEqual([delayed.jobId, active.jobId, failed.jobId]);
      await taken[0]!.moveToDelayed(Date.now() + 3_600_000, token);
      await taken[2]!.moveToFailed(new Error('PROVIDER_UNAVAILABLE: down'), token);
      expect(await objects.getJobState(delayed.jobId)).toBe('delayed');
      expect(await objects.getJobState(active.jobId)).toBe('active');
      expect(await objects.getJobState(failed.jobId)).toBe('failed');
      // An Idempotency-Key repeat of the failed one: a second body noted for the same job id, which the API releases.
      const repeatBody = await stage(4);
      const opts = { idempotencyKey: 'k-1' };
      const first = await queues.enqueue('write', { store: 'mem', key: 'd', body: await stage(5) }, opts);
      const repeat = await queues.enqueue('write', { store: 'mem', key: 'd', body: { ...repeatBody, etag: sha256Hex('body 5 of a job'), size: 'body 5 of a job'.length } }, opts);
      expect(repeat.jobId).toBe(first.jobId);
      const ctx = () => f.context(new Map(), { queues: queues.all(), settings: { stagingTtlSeconds: 3600 } });
      const run = async () => {
        const c = ctx();
        c.maintenance!.prefix = prefix;
        return (await cleanupJob.handle({}, c)).result;
      };
      const result = await run();
      // 1, 2, 3 and 5 are kept; 4 (noted for the waiting job, which carries 5) is kept too until that job completes.
      expect(result.stagingKept).toBe(5);
      for (const n of [1, 2, 3, 5]) expect((await f.stagingProvider.stat(`staging/00000000-0000-4000-8000-00000000010${n}`)).size).toBeGreaterThan(0);
      await (await objects.getJob(failed.jobId))!.remove();
      const after = await run();
      expect(after.stagingRemoved).toBe(1);
      await worker.close();
    } finally {
      await queues.close();
    }
  });

  it('counts thousands of versions of a key across listing pages, and combines keep-by-count with keep-by-age', async () => {
    const ram = new RamProvider({ maxBytes: 64 * 1024 * 1024 });
    const texts = Array.from({ length: 2500 }, (_, i) => `v${i}`);
    await versionsAt(ram, 'many', texts);
    await versionsAt(ram, 'mixed', ['old1', 'old2', 'old3'], Date.now() - 10 * DAY_MS);
    await versionsAt(ram, 'mixed', ['new1', 'new2']);
    const disk = new DiskProvider({ root: await f.tempDir('review-disk'), fsync: false });
    await versionsAt(disk, 'many', Array.from({ length: 1100 }, (_, i) => `d${i}`));
    const stores = new Map<string, StorageProvider>([['mem', ram], ['files', disk]]);
    const { result } = await cleanupJob.handle({}, f.context(stores, { settings: { versionRetentionCount: 4, versionRetentionDays: 5 } }));
    expect(result.stores.mem?.versionsDeleted).toBe(2496 + 3);
    expect(await messages(ram, 'many')).toEqual(['v2499', 'v2498', 'v2497', 'v2496']);
    expect(await messages(ram, 'mixed')).toEqual(['new2', 'new1']);
    expect(await messages(disk, 'many')).toEqual(['d1099', 'd1098', 'd1097', 'd1096']);
  }, 60_000);

  it('two cleanups at once end in the right state without failing', async () => {
    const disk = new DiskProvider({ root: await f.tempDir('review-twice'), fsync: false });
    for (let k = 0; k < 5; k++) await versionsAt(disk, `k${k}`, Array.from({ length: 12 }, (_, i) => `${k}-${i}`));
    const stores = new Map<string, StorageProvider>([['files', disk]]);
    const run = () => cleanupJob.handle({}, f.context(stores, { settings: { versionRetentionCount: 2 } }));
    const [a, b] = await Promise.all([run(), run()]);
    expect(a.result.failed + b.result.failed).toBe(0);
    for (let k = 0; k < 5; k++) expect(await messages(disk, `k${k}`)).toEqual([`${k}-11`, `${k}-10`]);
  });

  it('hybrid: counts cold versions, trims the backup copies too, and deletes nothing while cold is down (listed from backup)', async () => {
    let coldDown = false;
    const cold = beforeCalls(new RamProvider({ maxBytes: 8 * 1024 * 1024 }), ['list', 'listVersions', 'deleteVersion', 'stat', 'read'], () => {
      if (coldDown) throw new ProviderUnavailableError('cold: connection refused');
    });
    const redis = await connectRedis('worker');
    const keyPrefix = uniquePrefix('cleanup-hybrid');
    const backup = new DiskProvider({ root: await f.tempDir('review-hybrid-backup'), fsync: false });
    const hybrid = await createHybridProvider({
      name: 'media',
      hot: new RamProvider({ maxBytes: 8 * 1024 * 1024 }),
      cold,
      backup,
      redis,
      keyPrefix,
      accessThreshold: 5,
      hotTtlSeconds: 60,
      hotMaxBytes: 1024 * 1024,
    });
    try {
      for (let i = 0; i < 6; i++) await hybrid.createVersion('doc', `h${i}`, { message: `h${i}` });
      const stores = new Map<string, StorageProvider>([['media', hybrid]]);
      coldDown = true;
      const during = (await cleanupJob.handle({}, f.context(stores, { settings: { versionRetentionCount: 2 } }))).result;
      expect(during.stores.media?.versionsDeleted ?? 0).toBe(0);
      expect(await messages(backup, 'doc')).toHaveLength(6);
      coldDown = false;
      const { result } = await cleanupJob.handle({}, f.context(stores, { settings: { versionRetentionCount: 2 } }));
      expect(result.stores.media).toMatchObject({ keys: 1, versionsDeleted: 4 });
      expect(await messages(hybrid, 'doc')).toEqual(['h5', 'h4']);
      expect(await messages(backup, 'doc')).toEqual(['h5', 'h4']);
    } finally {
      await hybrid.close();
      await deleteKeys(redis, keyPrefix).catch(() => undefined);
      await closeRedis(redis);
    }
  });
});
