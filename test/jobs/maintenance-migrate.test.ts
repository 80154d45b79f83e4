/**
 * `migrate`: verified copies between stores that survive a killed worker (child process, SIGKILL) and a graceful
 * shutdown, continuing from the page they saved instead of starting over.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { JobInterruptedError } from '../../src/jobs/definition.js';
import { migrateJob, type MigrateResult } from '../../src/jobs/migrate.js';
import { sha256Hex } from '../../src/providers/body.js';
import { DiskProvider } from '../../src/providers/disk.js';
import { DataCorruptedError, NotFoundError } from '../../src/providers/errors.js';
import { GitProvider } from '../../src/providers/git.js';
import { RamProvider } from '../../src/providers/ram.js';
import { createS3Provider } from '../../src/providers/s3.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { TEST_REDIS_URL } from '../support/redis.js';
import { s3ProviderOptions, sharedS3 } from '../support/s3.js';
import { beforeEachWrite, interceptMethod, slowWrites } from '../support/intercept.js';
import { runScript, type Child } from './fixtures/child.js';
import { etags, fill, maintenanceFixture, type MaintenanceFixture } from './fixtures/maintenance.js';
import { startPipeline, waitFor, type Pipeline } from './fixtures/pipeline.js';

const content = (i: number) => `migrated object number ${i}`;

/** Counts the writes a store takes, each `delayMs` slower. */
function countingWrites(provider: StorageProvider, delayMs = 0): { provider: StorageProvider; writes: () => number } {
  let writes = 0;
  const counted = beforeEachWrite(slowWrites(provider, delayMs), () => void writes++);
  return { provider: counted, writes: () => writes };
}

let f: MaintenanceFixture;

beforeAll(async () => {
  f = await maintenanceFixture('migrate');
});

afterAll(async () => {
  await f?.close();
});

describe('migrate', () => {
  it('a run stopped by a shutdown resumes at the page it saved and copies each object once', async () => {
    const from = new RamProvider({ maxBytes: 16 * 1024 * 1024 });
    await fill(from, 500, 'k/', content);
    const to = countingWrites(new DiskProvider({ root: await f.tempDir('resumed'), fsync: false }));
    const stores = new Map<string, StorageProvider>([['from', from], ['to', to.provider]]);

    const stop = new AbortController();
    const first = f.context(stores, { signal: stop.signal });
    const saved: Record<string, unknown>[] = [];
    first.reportProgress = async (progress) => {
      saved.push(progress);
      stop.abort();
    };
    await expect(migrateJob.handle({ from: 'from', to: 'to' }, first)).rejects.toBeInstanceOf(JobInterruptedError);
    expect(saved).toHaveLength(1);
    expect(saved[0]).toMatchObject({ objects: 200, copied: 200 });

    const second = f.context(stores, { progress: saved[0] });
    const { result, event } = await migrateJob.handle({ from: 'from', to: 'to' }, second);
    expect(result).toMatchObject({ objects: 500, copied: 500, skipped: 0, verified: true });
    expect(event).toMatchObject({ type: 'migration.completed', store: 'to' });
    expect(to.writes()).toBe(500);
    expect(await etags(to.provider)).toEqual(await etags(from));
    expect(await to.provider.stat('k/7')).toMatchObject({ contentType: 'text/plain', metadata: { n: '7' } });
  });

  it('a run resumed after a shutdown names the failures of the pages before, not only counts them', async () => {
    const healthy = new RamProvider({ maxBytes: 16 * 1024 * 1024 });
    await fill(healthy, 300, 'f/', content);
    // Damaged at rest in the source: not copied, a failure of the first page.
    const from = interceptMethod(healthy, 'read', (read) => async (key, opts) => {
      if (key === 'f/10') throw new DataCorruptedError('f/10 does not match its etag');
      return read(key, opts);
    });
    const stores = new Map<string, StorageProvider>([['from', from], ['to', new DiskProvider({ root: await f.tempDir('failed-page'), fsync: false })]]);
    const stop = new AbortController();
    const first = f.context(stores, { signal: stop.signal });
    let saved: unknown;
    first.reportProgress = async (progress) => {
      saved = JSON.parse(JSON.stringify(progress)); // as BullMQ keeps it
      stop.abort();
    };
    await expect(migrateJob.handle({ from: 'from', to: 'to' }, first)).rejects.toBeInstanceOf(JobInterruptedError);

    const { result } = await migrateJob.handle({ from: 'from', to: 'to' }, f.context(stores, { progress: saved }));
    expect(result).toMatchObject({ objects: 300, copied: 299, verified: false, failureCount: 1 });
    expect(result.failures.map((failure) => failure.key)).toEqual(['f/10']);
  });

  it('a run picked up with a ram target starts over: that memory went with the process that ran before', async () => {
    const from = new RamProvider({ maxBytes: 16 * 1024 * 1024 });
    await fill(from, 500, 'r/', content);
    const stop = new AbortController();
    const before = f.context(new Map<string, StorageProvider>([['from', from], ['to', new RamProvider({ maxBytes: 16 * 1024 * 1024 })]]), { signal: stop.signal });
    let saved: Record<string, unknown> | undefined;
    before.reportProgress = async (progress) => {
      saved = progress;
      stop.abort();
    };
    await expect(migrateJob.handle({ from: 'from', to: 'to' }, before)).rejects.toBeInstanceOf(JobInterruptedError);
    expect(saved).toMatchObject({ objects: 200 });

    // The next process's ram store is empty.
    const after = new RamProvider({ maxBytes: 16 * 1024 * 1024 });
    const { result } = await migrateJob.handle({ from: 'from', to: 'to' }, f.context(new Map<string, StorageProvider>([['from', from], ['to', after]]), { progress: saved }));
    expect(result).toMatchObject({ objects: 500, copied: 500, verified: true });
    expect(await etags(after)).toEqual(await etags(from));
  });

  it('copies versions oldest first with their messages, continuing a history an earlier run began', async () => {
    const from = new RamProvider({ maxBytes: 1024 * 1024 });
    for (const text of ['one', 'two', 'three']) await from.createVersion('doc', text, { message: `save ${text}`, author: { name: 'Ada' } });
    const to = new DiskProvider({ root: await f.tempDir('versions'), fsync: false });
    await to.createVersion('doc', 'one', { message: 'save one', author: { name: 'Ada' } });
    const { result } = await migrateJob.handle({ from: 'from', to: 'to', versions: true }, f.context(new Map<string, StorageProvider>([['from', from], ['to', to]])));
    expect(result).toMatchObject({ objects: 1, versions: 2, skipped: 1, verified: true });
    const versions = (await to.listVersions('doc')).items;
    expect(versions.map((version) => [version.message, version.etag])).toEqual([
      ['save three', sha256Hex('three')],
      ['save two', sha256Hex('two')],
      ['save one', sha256Hex('one')],
    ]);
  });

  it('a run that lost its job to another run of it creates no version (the other run would create it again)', async () => {
    const from = new RamProvider({ maxBytes: 1024 * 1024 });
    for (const text of ['one', 'two']) await from.createVersion('doc', text, { message: `save ${text}` });
    const to = new RamProvider({ maxBytes: 1024 * 1024 });
    const ctx = f.context(new Map<string, StorageProvider>([['from', from], ['to', to]]));
    const lost = new Error('this run no longer holds its job');
    await expect(migrateJob.handle({ from: 'from', to: 'to', versions: true }, { ...ctx, fence: async () => Promise.reject(lost) })).rejects.toBe(lost);
    expect((await to.listVersions('doc')).items).toEqual([]);
    // Objects without versions are fenced as well, with or without `versions`.
    await from.write('plain', 'no history');
    for (const versions of [false, true]) {
      await expect(migrateJob.handle({ from: 'from', to: 'to', versions }, { ...ctx, fence: async () => Promise.reject(lost) })).rejects.toBe(lost);
    }
    expect((await to.list()).items).toEqual([]);
  });

  it('a run stopped by a shutdown waits for the versions it is writing, so the next run records each once', async () => {
    const from = new RamProvider({ maxBytes: 4 * 1024 * 1024 });
    for (let i = 0; i < 40; i++) await from.createVersion('a', `a${i}`, { message: `a${i}` });
    for (const key of ['b', 'c', 'd']) await from.createVersion(key, `${key}1`, { message: `${key}1` });
    // A large upload: b, c and d are still being written when the shutdown comes.
    const ram = new RamProvider({ maxBytes: 4 * 1024 * 1024 });
    const to = interceptMethod(ram, 'createVersion', (createVersion) => async (key, body, opts) => {
      await new Promise((resolve) => setTimeout(resolve, key === 'a' ? 5 : 300));
      return createVersion(key, body, opts);
    });
    const stores = new Map<string, StorageProvider>([['from', from], ['to', to]]);
    const stop = new AbortController();
    const first = f.context(stores, { signal: stop.signal, jobId: 'maintenance-stopped-versions' });
    setTimeout(() => stop.abort(), 50);
    await expect(migrateJob.handle({ from: 'from', to: 'to', versions: true }, first)).rejects.toBeInstanceOf(JobInterruptedError);

    // The worker puts the job back at once: the next run starts as soon as the first one has returned.
    const second = f.context(stores, { jobId: 'maintenance-stopped-versions', progress: first.progressLog.at(-1) });
    const { result } = await migrateJob.handle({ from: 'from', to: 'to', versions: true }, second);
    expect(result).toMatchObject({ objects: 4, verified: true });
    for (const key of ['b', 'c', 'd']) expect((await ram.listVersions(key)).items.map((version) => version.message)).toEqual([`${key}1`]);
    expect((await ram.listVersions('a')).items).toHaveLength(40);
  });

  it('a final pass after retention trimmed the oldest versions of the source copies the newer ones', async () => {
    const from = new RamProvider({ maxBytes: 1024 * 1024 });
    const to = new RamProvider({ maxBytes: 1024 * 1024 });
    const stores = new Map<string, StorageProvider>([['from', from], ['to', to]]);
    for (const text of ['v1', 'v2', 'v3']) await from.createVersion('doc', text, { message: text });
    await migrateJob.handle({ from: 'from', to: 'to', versions: true }, f.context(stores));
    await from.createVersion('doc', 'v4', { message: 'v4' });
    await from.deleteVersion('doc', (await from.listVersions('doc')).items.at(-1)!.versionId);

    const { result } = await migrateJob.handle({ from: 'from', to: 'to', versions: true }, f.context(stores));
    expect(result).toMatchObject({ versions: 1, verified: true, failureCount: 0 });
    expect((await to.listVersions('doc')).items.map((version) => version.message)).toEqual(['v4', 'v3', 'v2', 'v1']);
  });

  it('a version removed from the source while it is copied is left out, the rest of the key is copied', async () => {
    const from = new RamProvider({ maxBytes: 1024 * 1024 });
    for (const text of ['one', 'two', 'three']) await from.createVersion('doc', text, { message: `save ${text}` });
    await from.write('doc', 'current', { contentType: 'text/markdown' });
    const oldest = (await from.listVersions('doc')).items.at(-1)!.versionId;
    // Retention (the hourly cleanup) removes the oldest version after migrate listed it.
    const racing = interceptMethod(from, 'read', (read) => async (key, opts) => {
      if (opts?.versionId === oldest) throw new NotFoundError(`version ${oldest} of "${key}"`);
      return read(key, opts);
    });
    const to = new RamProvider({ maxBytes: 1024 * 1024 });
    const { result } = await migrateJob.handle({ from: 'from', to: 'to', versions: true }, f.context(new Map<string, StorageProvider>([['from', racing], ['to', to]])));
    expect(result).toMatchObject({ objects: 1, copied: 1, versions: 2, verified: true });
    expect((await to.listVersions('doc')).items.map((version) => version.message)).toEqual(['save three', 'save two']);
    expect(await to.stat('doc')).toMatchObject({ etag: sha256Hex('current'), contentType: 'text/markdown' });
  });

  it('into a git store (every write a version) records the source history alone, and a final pass continues it', async () => {
    const from = new RamProvider({ maxBytes: 1024 * 1024 });
    const repoPath = await f.tempDir('migrate-git');
    const git = await GitProvider.open({ repoPath });
    const stores = new Map<string, StorageProvider>([['from', from], ['git', git]]);
    const messages = async (provider: StorageProvider) => (await provider.listVersions('doc')).items.map((version) => version.message).reverse();
    try {
      await from.createVersion('doc', 'v1', { message: 'first' });
      await from.createVersion('doc', 'v2', { message: 'second' });
      const first = (await migrateJob.handle({ from: 'from', to: 'git', versions: true }, f.context(stores))).result;
      expect(first).toMatchObject({ versions: 2, copied: 0, skipped: 1, verified: true });
      expect(await messages(git)).toEqual(['first', 'second']);

      await from.createVersion('doc', 'v3', { message: 'third' });
      const final = (await migrateJob.handle({ from: 'from', to: 'git', versions: true }, f.context(stores))).result;
      expect(final).toMatchObject({ versions: 1, copied: 0, skipped: 1, verified: true });
      expect(await messages(git)).toEqual(['first', 'second', 'third']);
    } finally {
      await git.close();
    }
  });

  it('into a git store, a final pass continues the history after the version its write of the current object made', async () => {
    const from = new RamProvider({ maxBytes: 1024 * 1024 });
    const git = await GitProvider.open({ repoPath: await f.tempDir('migrate-git-current') });
    const stores = new Map<string, StorageProvider>([['from', from], ['git', git]]);
    try {
      await from.createVersion('doc', 'v1', { message: 'first' });
      await from.write('doc', 'current, unversioned');
      expect((await migrateJob.handle({ from: 'from', to: 'git', versions: true }, f.context(stores))).result).toMatchObject({ versions: 1, copied: 1 });

      await from.createVersion('doc', 'v2', { message: 'second' });
      const final = (await migrateJob.handle({ from: 'from', to: 'git', versions: true }, f.context(stores))).result;
      expect(final).toMatchObject({ versions: 1, verified: true, failureCount: 0 });
      expect((await git.listVersions('doc')).items[0]).toMatchObject({ message: 'second', etag: sha256Hex('v2') });
    } finally {
      await git.close();
    }
  });

  it('reports a key whose versions cannot be copied because the target has a history of its own', async () => {
    const to = new RamProvider({ maxBytes: 1024 * 1024 });
    await to.createVersion('doc', 'theirs', { message: 'theirs' });
    await new Promise((resolve) => setTimeout(resolve, 5)); // the source's object is newer: it may replace the target's
    const from = new RamProvider({ maxBytes: 1024 * 1024 });
    await from.createVersion('doc', 'ours', { message: 'ours' });
    const { result } = await migrateJob.handle({ from: 'from', to: 'to', versions: true }, f.context(new Map<string, StorageProvider>([['from', from], ['to', to]])));
    expect(result).toMatchObject({ versions: 0, copied: 1, verified: false, failureCount: 1, failures: [expect.objectContaining({ key: 'doc' })] });
    expect((await to.listVersions('doc')).items.map((version) => version.message)).toEqual(['theirs']);
  });

  it('reports an object the target stored with other content than it was given', async () => {
    const from = new RamProvider({ maxBytes: 1024 * 1024 });
    await from.write('good', 'fine');
    await from.write('bad', 'will be mangled');
    const ram = new RamProvider({ maxBytes: 1024 * 1024 });
    const mangling = interceptMethod(ram, 'write', (write) => (key, body, opts) => write(key, key === 'bad' ? 'mangled' : body, opts));
    const { result } = await migrateJob.handle({ from: 'from', to: 'to' }, f.context(new Map<string, StorageProvider>([['from', from], ['to', mangling]])));
    expect(result).toMatchObject({ copied: 1, verified: false, failureCount: 1, failures: [expect.objectContaining({ key: 'bad', etag: sha256Hex('will be mangled') })] });
  });
});

describe('migrate in worker processes', () => {
  let p: Pipeline;
  const children: Child[] = [];

  beforeAll(async () => {
    p = await startPipeline('migrate-workers', { stores: new Map() });
  });

  afterEach(async () => {
    for (const child of children.splice(0)) {
      if (child.process.exitCode === null && child.process.signalCode === null) child.process.kill('SIGKILL');
      await child.exited;
    }
  });

  afterAll(async () => {
    await p?.close();
  });

  const progressOf = async (jobId: string) => ((await p.queues.getJob(jobId))?.progress ?? {}) as { objects?: number; cursor?: string | null };

  it('a graceful shutdown puts a running migration back without using an attempt; the next worker finishes it', async () => {
    const from = new RamProvider({ maxBytes: 16 * 1024 * 1024 });
    await fill(from, 1000, 'g/', content);
    const to = countingWrites(new RamProvider({ maxBytes: 16 * 1024 * 1024 }), 4);
    p.stores.set('gfrom', from);
    p.stores.set('gto', to.provider);
    const maintenance = f.context(p.stores).maintenance;
    const { jobId } = await p.queues.enqueue('migrate', { from: 'gfrom', to: 'gto' });
    const first = await p.startWorkers({ queues: ['maintenance'], maintenance });
    await waitFor(async () => ((await progressOf(jobId)).objects ?? 0) >= 200, { what: 'the first page' });
    await first.close(10_000);
    const stopped = (await p.queues.getJob(jobId))!;
    expect(['delayed', 'waiting']).toContain(await stopped.getState());
    expect(stopped.attemptsMade).toBe(0);
    expect(to.writes()).toBeLessThan(1000);

    const second = await p.startWorkers({ queues: ['maintenance'], maintenance });
    await p.waitForJobState(jobId, 'completed');
    await second.close();
    const result = (await p.queues.getJob(jobId))!.returnvalue as MigrateResult;
    expect(result).toMatchObject({ objects: 1000, verified: true });
    // Objects copied in the interrupted page before the stop are found in place by the second run: every object
    // was written exactly once.
    expect(result.copied + result.skipped).toBe(1000);
    expect(to.writes()).toBe(1000);
    expect(await p.eventsOf(jobId, 'migration.completed')).toHaveLength(1);
  });

  it('migrates 2,000 objects from disk to s3 through a worker killed halfway, with identical etags', async () => {
    const endpoint = await sharedS3();
    const bucket = await endpoint.createBucket();
    const sourceDir = await p.tempDir('migrate-source');
    const source = new DiskProvider({ root: sourceDir, fsync: false });
    await fill(source, 2000, 'm/', content);
    const startChild = async () => {
      const child = runScript('maintenance-worker.ts', {
        REDIS_URL: TEST_REDIS_URL,
        QUEUE_PREFIX: p.prefix,
        STORES: 'src:disk',
        STORAGE_ROOT_DIR: await p.tempDir('migrate-root'),
        KYOZO_TEST_SOURCE_DIR: sourceDir,
        KYOZO_TEST_S3: JSON.stringify(s3ProviderOptions(endpoint, bucket)),
        KYOZO_TEST_LOCK_MS: '1000',
      });
      children.push(child);
      await child.waitForReport('ready');
      return child;
    };

    const first = await startChild();
    const { jobId } = await p.queues.enqueue('migrate', { from: 'src', to: 'dst' });
    await waitFor(async () => ((await progressOf(jobId)).objects ?? 0) >= 600, { timeoutMs: 60_000, what: '600 objects migrated' });
    first.process.kill('SIGKILL');
    expect(await first.exited).toMatchObject({ signal: 'SIGKILL' });
    const atKill = await progressOf(jobId);
    expect(atKill.objects).toBeLessThan(2000);

    await startChild();
    await waitFor(async () => (await (await p.queues.getJob(jobId))?.getState()) === 'completed', { timeoutMs: 60_000, what: 'migration completed' });
    const done = (await p.queues.getJob(jobId))!;
    const result = done.returnvalue as MigrateResult;
    expect(result).toMatchObject({ objects: 2000, verified: true, failureCount: 0 });
    expect(result.copied + result.skipped).toBe(2000);
    // The second worker continued from the page saved before the kill: what it found already copied is at most
    // that one page (starting over, it would have found every one of the 600+ objects already there).
    expect(result.skipped).toBeLessThanOrEqual(200);
    expect(done.progress).toMatchObject({ phase: 'copy', cursor: null, objects: 2000 });

    const target = await createS3Provider(s3ProviderOptions(endpoint, bucket));
    try {
      expect(await etags(target)).toEqual(await etags(source));
    } finally {
      await target.close();
    }
    expect(await p.eventsOf(jobId, 'migration.completed')).toHaveLength(1);
  }, 120_000);
});
