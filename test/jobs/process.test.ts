/**
 * Worker processes as the operating system treats them: killed with SIGKILL mid-run, stopped with SIGTERM.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../../src/providers/body.js';
import { DiskProvider } from '../../src/providers/disk.js';
import type { ObjectInfo } from '../../src/providers/types.js';
import { createQueues } from '../../src/jobs/queue.js';
import { closeRedis, createRedis, whenReady } from '../../src/redis.js';
import { redisServerUnavailableReason, startRedisServer } from '../cluster/redis-server.js';
import { TEST_REDIS_URL } from '../support/redis.js';
import { runScript, type Child } from './fixtures/child.js';
import { inlineBody, startPipeline, waitFor, type Pipeline } from './fixtures/pipeline.js';

describe('worker processes', () => {
  let p: Pipeline;
  let storeDir: string;
  let disk: DiskProvider;
  const children: Child[] = [];

  const startChild = async (env: Record<string, string>) => {
    const child = runScript('worker-process.ts', {
      REDIS_URL: TEST_REDIS_URL,
      QUEUE_PREFIX: p.prefix,
      STORES: 'main:disk',
      STORAGE_ROOT_DIR: await p.tempDir('root'),
      KYOZO_TEST_STORE_DIR: storeDir,
      ...env,
    });
    children.push(child);
    await child.waitForReport('ready');
    return child;
  };

  beforeAll(async () => {
    p = await startPipeline('process');
    storeDir = await p.tempDir('store');
    disk = new DiskProvider({ root: storeDir, fsync: false });
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

  it('finishes every write exactly once when a worker is killed mid-run and another takes over', async () => {
    const recovery = { KYOZO_TEST_LOCK_MS: '1000', KYOZO_TEST_STALLED_INTERVAL_MS: '300' };
    const first = await startChild({ WORKER_CONCURRENCY: '4', KYOZO_TEST_WRITE_DELAY_MS: '15', ...recovery });
    const jobIds: string[] = [];
    for (let i = 0; i < 200; i++) {
      jobIds.push((await p.queues.enqueue('write', { store: 'main', key: `crash/${i}`, body: inlineBody(`content ${i}`) })).jobId);
    }
    await waitFor(() => p.received.filter((event) => event.type === 'object.written').length >= 40, { what: '40 writes' });
    first.process.kill('SIGKILL');
    expect(await first.exited).toMatchObject({ signal: 'SIGKILL' });
    const doneBeforeKill = p.received.filter((event) => event.type === 'object.written').length;
    expect(doneBeforeKill).toBeLessThan(200);

    await startChild({ WORKER_CONCURRENCY: '4', ...recovery });
    await waitFor(async () => (await p.queues.queue('objects').getCompletedCount()) === 200, { timeoutMs: 45_000, what: '200 completed jobs' });

    const objects: ObjectInfo[] = [];
    let cursor: string | undefined;
    do {
      const page = await disk.list({ prefix: 'crash/', cursor });
      objects.push(...page.items);
      cursor = page.cursor;
    } while (cursor !== undefined);
    expect(objects).toHaveLength(200);
    for (const info of objects) expect(info.etag).toBe(sha256Hex(`content ${info.key.slice('crash/'.length)}`));

    // The killed worker had jobs in hand: they were recovered as stalled and run again.
    const jobs = await Promise.all(jobIds.map((id) => p.queues.getJob(id)));
    expect(jobs.filter((job) => (job?.stalledCounter ?? 0) > 0 || (job?.attemptsStarted ?? 0) > 1).length).toBeGreaterThan(0);

    const written = (await p.bus.readSince(undefined, ['object.written'], 100_000)).filter((event) => jobIds.includes(event.jobId ?? ''));
    expect(new Set(written.map((event) => event.jobId)).size).toBe(200);
    expect(written).toHaveLength(200);
  });

  it('emits job.failed once when the worker dies as the job fails for good', async () => {
    const recovery = { KYOZO_TEST_LOCK_MS: '1000', KYOZO_TEST_STALLED_INTERVAL_MS: '300' };
    const dying = await startChild({ KYOZO_TEST_DIE_ON_EVENT: 'job.failed', ...recovery });
    await disk.write('failing/doc', 'current');
    const { jobId } = await p.queues.enqueue('write', { store: 'main', key: 'failing/doc', body: inlineBody('new'), ifMatch: sha256Hex('stale') });
    expect(await dying.exited).toMatchObject({ signal: 'SIGKILL' });

    // The job was not yet failed when its worker died: another worker runs it again, and it fails and says so.
    await startChild(recovery);
    await waitFor(async () => (await (await p.queues.getJob(jobId))?.getState()) === 'failed', { timeoutMs: 15_000, what: 'the job failed' });
    const failed = await p.eventsOf(jobId, 'job.failed');
    expect(failed).toHaveLength(1);
    expect(failed[0]!.data).toMatchObject({ code: 'PRECONDITION_FAILED' });
  });

  it('lets the active job finish on SIGTERM, takes no new one, and exits 0', async () => {
    const child = await startChild({ WORKER_CONCURRENCY: '1', KYOZO_TEST_WRITE_DELAY_MS: '1500', WORKER_SHUTDOWN_TIMEOUT_MS: '20000' });
    const active = await p.queues.enqueue('write', { store: 'main', key: 'shutdown/active', body: inlineBody('finish me') });
    const queued = await p.queues.enqueue('write', { store: 'main', key: 'shutdown/queued', body: inlineBody('not yet') });
    await child.waitForReport('active', active.jobId);

    child.process.kill('SIGTERM');
    expect(await child.exited).toEqual({ code: 0, signal: null });

    expect(await (await p.queues.getJob(active.jobId))?.getState()).toBe('completed');
    expect((await disk.stat('shutdown/active')).etag).toBe(sha256Hex('finish me'));
    expect(await p.eventsOf(active.jobId, 'object.written')).toHaveLength(1);
    expect(await (await p.queues.getJob(queued.jobId))?.getState()).toBe('waiting');
    await (await p.queues.getJob(queued.jobId))?.remove();
  });

  it('exits 0 after WORKER_SHUTDOWN_TIMEOUT_MS when the active job takes longer, leaving it to another worker', async () => {
    const child = await startChild({ WORKER_CONCURRENCY: '1', KYOZO_TEST_WRITE_DELAY_MS: '30000', WORKER_SHUTDOWN_TIMEOUT_MS: '300' });
    const slow = await p.queues.enqueue('write', { store: 'main', key: 'shutdown/slow', body: inlineBody('too slow') });
    await child.waitForReport('active', slow.jobId);

    child.process.kill('SIGTERM');
    expect(await child.exited).toEqual({ code: 0, signal: null });
    expect(await (await p.queues.getJob(slow.jobId))?.getState()).toBe('active');
    await expect(disk.stat('shutdown/slow')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it.skipIf(redisServerUnavailableReason() !== undefined)('exits within its timeout when Redis goes away during an active job', async () => {
    const redis = await startRedisServer();
    const producer = createRedis({ redis: { url: redis.url, explicit: true } }, 'producer');
    const queues = createQueues({ connection: producer, prefix: p.prefix, attempts: 3 });
    try {
      await whenReady(producer);
      const child = await startChild({ REDIS_URL: redis.url, WORKER_CONCURRENCY: '1', KYOZO_TEST_WRITE_DELAY_MS: '30000', WORKER_SHUTDOWN_TIMEOUT_MS: '300' });
      const slow = await queues.enqueue('write', { store: 'main', key: 'shutdown/redis-gone', body: inlineBody('never') });
      await child.waitForReport('active', slow.jobId);
      await queues.close();
      await closeRedis(producer);
      await redis.stop();

      const started = Date.now();
      child.process.kill('SIGTERM');
      const exit = await Promise.race([child.exited, new Promise((resolve) => setTimeout(() => resolve('still running after 20 s'), 20_000))]);
      expect(exit).toEqual({ code: 0, signal: null }); // shut down, not cut off by the deadline
      expect(Date.now() - started).toBeLessThan(300 + 10_000 + 2_000); // WORKER_SHUTDOWN_TIMEOUT_MS + SHUTDOWN_GRACE_MS
    } finally {
      await queues.close();
      await closeRedis(producer);
      await redis.stop();
    }
  });
});

