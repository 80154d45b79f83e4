/**
 * `cleanup` and `tier` handlers, and `deleteVersion` on the providers that have it: version retention by count and
 * age (never the newest), staging orphans, old jobs, the events cap; tiering driven through a store that plans.
 */
import { mkdir, mkdtemp, rm, stat, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Queue, Worker } from 'bullmq';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { DELIVERY_RETENTION, startWebhooks, webhookQueueName } from '../../src/events/webhooks.js';
import { cleanupJob } from '../../src/jobs/cleanup.js';
import { createQueues } from '../../src/jobs/queue.js';
import { tierJob } from '../../src/jobs/tier.js';
import { sha256Hex } from '../../src/providers/body.js';
import { DiskProvider } from '../../src/providers/disk.js';
import { InvalidArgumentError, NotFoundError, PermissionDeniedError, ProviderUnavailableError } from '../../src/providers/errors.js';
import { GitProvider } from '../../src/providers/git.js';
import { RamProvider } from '../../src/providers/ram.js';
import { createS3Provider } from '../../src/providers/s3.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { interceptMethod } from '../support/intercept.js';
import { s3ProviderOptions, sharedS3 } from '../support/s3.js';
import { maintenanceFixture, versionsAt, type MaintenanceFixture } from './fixtures/maintenance.js';
import { quietLog, waitFor } from './fixtures/pipeline.js';

const DAY_MS = 24 * 3600 * 1000;

let f: MaintenanceFixture;

beforeAll(async () => {
  f = await maintenanceFixture('cleanup');
});

afterEach(() => {
  vi.useRealTimers();
});

afterAll(async () => {
  await f?.close();
});

const messages = async (provider: StorageProvider, key: string) => (await provider.listVersions(key)).items.map((version) => version.message);

interface RetentionCase {
  name: string;
  /** Versions can be made in the past by faking the clock (an S3 endpoint refuses requests signed 10 days ago). */
  fakeClock: boolean;
  open(): Promise<{ provider: StorageProvider; dispose(): Promise<void> }>;
}

const providers: RetentionCase[] = [
  { name: 'ram', fakeClock: true, open: async () => ({ provider: new RamProvider({ maxBytes: 1024 * 1024 }), dispose: async () => {} }) },
  {
    name: 'disk',
    fakeClock: true,
    open: async () => ({ provider: new DiskProvider({ root: await f.tempDir('retention-disk'), fsync: false }), dispose: async () => {} }),
  },
  {
    name: 's3',
    fakeClock: false,
    open: async () => {
      const endpoint = await sharedS3();
      const bucket = await endpoint.createBucket();
      const provider = await createS3Provider(s3ProviderOptions(endpoint, bucket, { versioning: 'explicit' }));
      return { provider, dispose: async () => provider.close() };
    },
  },
];

for (const { name } of providers.filter((provider) => !provider.fakeClock)) {
  console.log(`retention by age is not tested on ${name}: a faked clock would break its request signing (by count it is)`);
}

describe.each(providers)('version retention on $name', ({ open, fakeClock }) => {
  it('keeps the newest VERSION_RETENTION_COUNT versions of every key and deletes the rest', async () => {
    const { provider, dispose } = await open();
    try {
      await versionsAt(provider, 'doc', ['v1', 'v2', 'v3', 'v4', 'v5']);
      await versionsAt(provider, 'short', ['s1', 's2']);
      await provider.write('plain', 'no versions');
      const ctx = f.context(new Map([['store', provider]]), { settings: { versionRetentionCount: 3 } });
      const { result, event } = await cleanupJob.handle({ store: 'store' }, ctx);
      expect(result).toMatchObject({ versionsDeleted: 2, skipped: 0, stores: { store: { keys: 3, versionsDeleted: 2 } } });
      expect(event.type).toBe('cleanup.completed');
      expect(await messages(provider, 'doc')).toEqual(['v5', 'v4', 'v3']);
      expect(await messages(provider, 'short')).toEqual(['s2', 's1']);
      expect((await provider.stat('doc')).etag).toBe(sha256Hex('v5'));
    } finally {
      await dispose();
    }
  });

  it.runIf(fakeClock)('deletes versions older than VERSION_RETENTION_DAYS but never the newest', async () => {
    const { provider, dispose } = await open();
    try {
      await versionsAt(provider, 'doc', ['old1', 'old2'], Date.now() - 10 * DAY_MS);
      await versionsAt(provider, 'doc', ['recent']);
      await versionsAt(provider, 'stale', ['stale1', 'stale2'], Date.now() - 10 * DAY_MS);
      const ctx = f.context(new Map([['store', provider]]), { settings: { versionRetentionDays: 5 } });
      const { result } = await cleanupJob.handle({ store: 'store' }, ctx);
      expect(result.versionsDeleted).toBe(3);
      expect(await messages(provider, 'doc')).toEqual(['recent']);
      expect(await messages(provider, 'stale')).toEqual(['stale2']);
    } finally {
      await dispose();
    }
  });

  it('deleteVersion removes one version, is idempotent, and leaves the current object readable', async () => {
    const { provider, dispose } = await open();
    try {
      const only = await provider.createVersion('doc', 'linked content', { message: 'only' });
      await provider.deleteVersion!('doc', only.versionId);
      await provider.deleteVersion!('doc', only.versionId);
      await provider.deleteVersion!('doc', 'not-a-version-id');
      expect((await provider.listVersions('doc')).items).toEqual([]);
      await expect(provider.stat('doc', { versionId: only.versionId })).rejects.toBeInstanceOf(NotFoundError);
      const { body } = await provider.read('doc');
      expect(Buffer.concat(await body.toArray()).toString()).toBe('linked content');
    } finally {
      await dispose();
    }
  });
});

describe('cleanup', () => {
  it('skips and counts a store that cannot delete single versions (git)', async () => {
    const repoPath = await mkdtemp(path.join(os.tmpdir(), 'kyozo-cleanup-git-'));
    const git = await GitProvider.open({ repoPath });
    try {
      await git.createVersion('doc', 'one', { message: 'one' });
      const ram = new RamProvider({ maxBytes: 1024 * 1024 });
      const { result } = await cleanupJob.handle({}, f.context(new Map<string, StorageProvider>([['docs', git], ['mem', ram]])));
      expect(result.skipped).toBe(1);
      expect(result.stores.docs?.skipped).toMatch(/git/);
      expect(result.stores.mem).toEqual({ keys: 0, versionsDeleted: 0 });
    } finally {
      await git.close();
      await rm(repoPath, { recursive: true, force: true });
    }
  });

  it('removes staging blobs older than STAGING_TTL and keeps younger ones', async () => {
    const orphan = 'staging/00000000-0000-4000-8000-000000000001';
    const fresh = 'staging/00000000-0000-4000-8000-000000000002';
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() - 2 * 3600 * 1000);
    await f.stagingProvider.write(orphan, 'a body whose job never ran');
    vi.useRealTimers();
    await f.stagingProvider.write(fresh, 'a body whose job is waiting');
    const { result } = await cleanupJob.handle({}, f.context(new Map(), { settings: { stagingTtlSeconds: 3600 } }));
    expect(result.stagingRemoved).toBe(1);
    await expect(f.stagingProvider.stat(orphan)).rejects.toBeInstanceOf(NotFoundError);
    expect((await f.stagingProvider.stat(fresh)).size).toBeGreaterThan(0);
  });

  it('keeps a staged body past STAGING_TTL while its job is still to run, and removes it once the job is gone', async () => {
    const queues = createQueues({ connection: f.redis.producer, prefix: f.redis.prefix, attempts: 1 });
    try {
      const content = 'the body of a job at the back of a long queue';
      const stagedKey = 'staging/00000000-0000-4000-8000-000000000003';
      vi.useFakeTimers({ toFake: ['Date'] });
      vi.setSystemTime(Date.now() - 3 * 3600 * 1000);
      await f.stagingProvider.write(stagedKey, content);
      vi.useRealTimers();
      const { jobId } = await queues.enqueue('write', { store: 'mem', key: 'late', body: { stagedKey, size: content.length, etag: sha256Hex(content) } });
      const context = () => f.context(new Map(), { settings: { stagingTtlSeconds: 3600 }, queues: queues.all() });

      const waiting = (await cleanupJob.handle({}, context())).result;
      expect(waiting).toMatchObject({ stagingRemoved: 0, stagingKept: 1 });
      expect((await f.stagingProvider.stat(stagedKey)).size).toBe(content.length);

      await (await queues.getJob(jobId))!.remove();
      const gone = (await cleanupJob.handle({}, context())).result;
      expect(gone).toMatchObject({ stagingRemoved: 1, stagingKept: 0 });
      await expect(f.stagingProvider.stat(stagedKey)).rejects.toBeInstanceOf(NotFoundError);
    } finally {
      await queues.close();
    }
  });

  it('sweeps leftovers of interrupted writes from disk stores', async () => {
    const root = await f.tempDir('leftovers-disk');
    const disk = new DiskProvider({ root, fsync: false });
    await disk.write('a/b', 'x');
    const leftover = path.join(root, 'objects', 'a', '.tmp-0123456789abcdef');
    await writeFile(leftover, 'half a write');
    const dayAgo = new Date(Date.now() - 24 * 3600 * 1000);
    await utimes(leftover, dayAgo, dayAgo);
    const { result } = await cleanupJob.handle({}, f.context(new Map([['files', disk]]), { settings: { stagingTtlSeconds: 3600 } }));
    expect(result.stores.files?.leftoversRemoved).toBe(1);
    await expect(stat(leftover)).rejects.toThrow();
  });

  it('goes on when a store cannot sweep its leftovers (down, or keys without the right to list uploads) (session 10)', async () => {
    const root = await f.tempDir('leftovers-refused');
    const disk = new DiskProvider({ root, fsync: false });
    const refusing = interceptMethod(new DiskProvider({ root: await f.tempDir('leftovers-refusing'), fsync: false }), 'removeLeftovers', () => async () => {
      throw new PermissionDeniedError('remove staged leftovers: AccessDenied (HTTP 403)');
    });
    const leftover = path.join(root, 'objects', '.tmp-0123456789abcdef');
    await mkdir(path.dirname(leftover), { recursive: true });
    await writeFile(leftover, 'half a write');
    const dayAgo = new Date(Date.now() - 24 * 3600 * 1000);
    await utimes(leftover, dayAgo, dayAgo);
    const stores = new Map<string, StorageProvider>([['media', refusing], ['files', disk]]);
    const { result } = await cleanupJob.handle({}, f.context(stores, { settings: { stagingTtlSeconds: 3600 } }));
    expect(result.stores.media?.leftoversRemoved).toBeUndefined();
    expect(result.stores.files?.leftoversRemoved).toBe(1);
  });

  it('goes on past a store whose retention fails (down): the other stores, staging and the events trim are done (session 11)', async () => {
    const ram = new RamProvider({ maxBytes: 1024 * 1024 });
    await ram.createVersion('doc', 'one', { message: 'one' });
    await ram.createVersion('doc', 'two', { message: 'two' });
    const down = interceptMethod(new RamProvider({ maxBytes: 1024 * 1024 }), 'list', () => async () => {
      throw new ProviderUnavailableError('list "media": endpoint down');
    });
    const orphan = 'staging/00000000-0000-4000-8000-000000000011';
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() - 2 * 3600 * 1000);
    await f.stagingProvider.write(orphan, 'a body whose job never ran');
    vi.useRealTimers();
    const stores = new Map<string, StorageProvider>([['media', down], ['mem', ram]]);
    const { result } = await cleanupJob.handle({}, f.context(stores, { settings: { stagingTtlSeconds: 3600, versionRetentionCount: 1 } }));
    expect(result.failed).toBe(1);
    expect(result.stores.media).toEqual({ keys: 0, versionsDeleted: 0, error: 'list "media": endpoint down' });
    expect(result.stores.mem).toEqual({ keys: 1, versionsDeleted: 1 });
    expect(result.stagingRemoved).toBeGreaterThanOrEqual(1);
    await expect(f.stagingProvider.stat(orphan)).rejects.toBeInstanceOf(NotFoundError);

    // Asked for that store alone, its failure is the job's, to be retried.
    await expect(cleanupJob.handle({ store: 'media' }, f.context(stores))).rejects.toBeInstanceOf(ProviderUnavailableError);
  });

  it('sweeps partial uploads a crashed process left in the staging store', async () => {
    const leftover = path.join(f.stagingRoot, 'objects', 'staging', '.tmp-00112233445566aa');
    await mkdir(path.dirname(leftover), { recursive: true });
    await writeFile(leftover, 'the first half of an upload');
    const dayAgo = new Date(Date.now() - 24 * 3600 * 1000);
    await utimes(leftover, dayAgo, dayAgo);
    const { result } = await cleanupJob.handle({}, f.context(new Map(), { settings: { stagingTtlSeconds: 3600 } }));
    expect(result.stagingLeftoversRemoved).toBe(1);
    await expect(stat(leftover)).rejects.toThrow();
  });

  it('trims the delivery queues of webhook URLs, also of URLs no process lists any more', async () => {
    const name = webhookQueueName('http://dropped.example/hook');
    // The URL's consumer group on the events stream is what remains of it once no process lists it.
    await f.redis.producer.xgroup('CREATE', f.bus.streamKey, name, '$', 'MKSTREAM');
    const queue = new Queue(name, { connection: f.redis.worker, prefix: f.redis.prefix });
    const worker = new Worker(name, async () => ({ status: 204 }), { connection: f.redis.worker, prefix: f.redis.prefix });
    try {
      await queue.add('deliver', { eventId: '1-0' });
      await waitFor(async () => (await queue.getCompletedCount()) === 1, { what: 'the delivery completed' });
      // Deliveries are kept a day whatever the jobs' settings say: cleanup runs a day and a minute later.
      vi.useFakeTimers({ toFake: ['Date'], now: Date.now() + (DELIVERY_RETENTION.completedAgeSeconds + 60) * 1000 });
      const { result } = await cleanupJob.handle({}, f.context(new Map(), { queues: [], settings: { completedJobAgeSeconds: 0 } }));
      vi.useRealTimers();
      expect(result.jobsRemoved).toBe(1);
      expect(await queue.getCompletedCount()).toBe(0);
    } finally {
      vi.useRealTimers();
      await worker.close();
      await queue.close();
    }
  });

  it('keeps webhook deliveries that gave up for their own week, however short the jobs\' retention (for /v1/webhooks/redeliver)', async () => {
    // Nothing listens on port 9 of loopback: the one attempt fails at once.
    const url = 'http://127.0.0.1:9/hook';
    const webhooks = startWebhooks({ connection: f.redis.worker, prefix: f.redis.prefix, streamKey: f.bus.streamKey, urls: [url], log: quietLog, attempts: 1, blockMs: 100 });
    try {
      await webhooks.ready;
      const deliveries = webhooks.queues.get(url)!;
      await f.bus.emit({ type: 'object.written', store: 'mem', key: 'undelivered', data: {} });
      await waitFor(async () => (await deliveries.getFailedCount()) === 1, { what: 'the delivery gave up' });
      const ctx = f.context(new Map(), { queues: [], settings: { completedJobAgeSeconds: 1, failedJobAgeSeconds: 1 } });
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      await cleanupJob.handle({}, ctx);
      expect(await deliveries.getFailedCount()).toBe(1);
      expect((await deliveries.getFailed())[0]!.opts.removeOnFail).toEqual({ age: DELIVERY_RETENTION.failedAgeSeconds, count: DELIVERY_RETENTION.failedCount });
    } finally {
      await webhooks.close(1_000);
    }
  });

  it('removes jobs past their retention and trims the events stream to EVENTS_MAXLEN', async () => {
    const queue = new Queue('objects', { connection: f.redis.worker, prefix: f.redis.prefix });
    const worker = new Worker('objects', async () => 'done', { connection: f.redis.worker, prefix: f.redis.prefix });
    try {
      for (let i = 0; i < 3; i++) await queue.add('probe', { i });
      await waitFor(async () => (await queue.getCompletedCount()) === 3, { what: '3 completed jobs' });
      for (let i = 0; i < 30; i++) await f.bus.emit({ type: 'object.written', key: `k${i}`, data: {} });
      const ctx = f.context(new Map(), { queues: [queue], settings: { completedJobAgeSeconds: 0, eventsMaxLen: 10 } });
      const { result } = await cleanupJob.handle({}, ctx);
      expect(result.jobsRemoved).toBe(3);
      expect(await queue.getCompletedCount()).toBe(0);
      expect(result.eventsTrimmed).toBeGreaterThanOrEqual(20);
      expect(await f.redis.producer.xlen(f.bus.streamKey)).toBe(10);
    } finally {
      await worker.close();
      await queue.close();
    }
  });
});

describe('tier', () => {
  /** A store that plans and applies tiering as a hybrid store does, and records what it was asked. */
  function planningStore() {
    const plan = { promote: ['a', 'b'], demote: ['c'] };
    const applied: unknown[] = [];
    const published: unknown[] = [];
    const store = {
      ...new RamProvider({ maxBytes: 1024 }),
      kind: 'hybrid',
      planTiering: async () => plan,
      applyTiering: async (given: typeof plan) => {
        applied.push(given);
        return { promoted: 2, promotedBytes: 300, demoted: 1, demotedBytes: 100, skipped: 0 };
      },
      publishTiering: async (given: typeof plan) => {
        published.push(given);
      },
      repairBackups: async () => ({ repaired: 1, pending: 2 }),
    } as unknown as StorageProvider;
    return { store, plan, applied, published };
  }

  it('applies and publishes the plan of every hybrid store and repairs its backups, with counts and bytes', async () => {
    const media = planningStore();
    const ctx = f.context(new Map<string, StorageProvider>([['media', media.store], ['plain', new RamProvider({ maxBytes: 1024 })]]));
    const { result, event } = await tierJob.handle({}, ctx);
    expect(media.applied).toEqual([media.plan]);
    expect(media.published).toEqual([media.plan]);
    expect(result).toMatchObject({
      promoted: 2,
      promotedBytes: 300,
      demoted: 1,
      demotedBytes: 100,
      repaired: 1,
      stores: { media: { planned: { promote: 2, demote: 1 }, backup: { repaired: 1, pending: 2 } } },
    });
    expect(Object.keys(result.stores)).toEqual(['media']);
    expect(event).toMatchObject({ type: 'tier.completed', data: result });
  });

  it('refuses a store that has no tiers', async () => {
    const ctx = f.context(new Map<string, StorageProvider>([['plain', new RamProvider({ maxBytes: 1024 })]]));
    await expect(tierJob.handle({ store: 'plain' }, ctx)).rejects.toBeInstanceOf(InvalidArgumentError);
  });
});
