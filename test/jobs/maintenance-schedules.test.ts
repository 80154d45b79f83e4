/**
 * The maintenance schedules as worker processes register them at start: one scheduler per schedule however many
 * workers start at once, and the configuration of the last one to start deciding which exist.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createQueues, type JobQueues } from '../../src/jobs/queue.js';
import { RamProvider } from '../../src/providers/ram.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { plannedSchedules, registerSchedules } from '../../src/workers/schedules.js';
import { startWorkerProcess, type WorkerProcess } from '../../src/workers/process.js';
import { TEST_REDIS_URL, redisFixture, type RedisFixture } from '../support/redis.js';
import { quietLog } from './fixtures/pipeline.js';

describe('maintenance schedules', () => {
  let redis: RedisFixture;
  let queues: JobQueues;
  let root: string;

  const configOf = (env: Record<string, string>) =>
    loadConfig({ REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: redis.prefix, STORAGE_ROOT_DIR: root, STORES: 'files:disk,vault:disk,media:hybrid', ...env });

  const start = (env: Record<string, string>): Promise<WorkerProcess> =>
    startWorkerProcess({
      config: configOf(env),
      log: quietLog,
      stores: new Map<string, StorageProvider>([['files', new RamProvider({ maxBytes: 1024 })]]),
    });

  const schedulers = async () =>
    (await queues.queue('maintenance').getJobSchedulers()).map((scheduler) => ({ id: scheduler.key, name: scheduler.name, pattern: scheduler.pattern })).sort((a, b) => a.id.localeCompare(b.id));

  beforeAll(async () => {
    redis = await redisFixture('schedules');
    queues = createQueues({ connection: redis.producer, prefix: redis.prefix, attempts: 3 });
    root = await mkdtemp(path.join(os.tmpdir(), 'kyozo-schedules-'));
  });

  afterAll(async () => {
    await queues?.close();
    await redis?.cleanup();
    await rm(root, { recursive: true, force: true });
  });

  it('plans tier only with a hybrid store, and backups of every store but BACKUP_STORE only when it is set', () => {
    const withBackup = plannedSchedules(configOf({ BACKUP_STORE: 'vault' })).map((schedule) => [schedule.id, schedule.name, schedule.data]);
    expect(withBackup).toEqual([
      ['tier', 'tier', {}],
      ['cleanup', 'cleanup', {}],
      ['backup-files', 'backup', { store: 'files' }],
      ['backup-media', 'backup', { store: 'media' }],
    ]);
    const plain = loadConfig({ STORES: 'files:disk', TIER_CRON: '*/5 * * * *' });
    expect(plannedSchedules(plain).map((schedule) => schedule.id)).toEqual(['cleanup']);
  });

  it('two workers starting at once register each schedule once', async () => {
    const workers = await Promise.all([start({ BACKUP_STORE: 'vault' }), start({ BACKUP_STORE: 'vault' })]);
    try {
      expect(await schedulers()).toEqual([
        { id: 'backup-files', name: 'backup', pattern: '0 3 * * *' },
        { id: 'backup-media', name: 'backup', pattern: '0 3 * * *' },
        { id: 'cleanup', name: 'cleanup', pattern: '0 * * * *' },
        { id: 'tier', name: 'tier', pattern: '*/5 * * * *' },
      ]);
      // One next run per schedule, not one per worker.
      expect(await queues.queue('maintenance').getDelayedCount()).toBe(4);
    } finally {
      await Promise.all(workers.map((worker) => worker.shutdown()));
    }
  });

  it('a worker started with a cron emptied and no BACKUP_STORE removes those schedules', async () => {
    const worker = await start({ CLEANUP_CRON: '', TIER_CRON: '*/10 * * * *' });
    try {
      expect(await schedulers()).toEqual([{ id: 'tier', name: 'tier', pattern: '*/10 * * * *' }]);
    } finally {
      await worker.shutdown();
    }
  });

  it('refuses a pattern with no next time rather than keep the old scheduler in silence (session 11)', async () => {
    const worker = await start({ CLEANUP_CRON: '0 * * * *', TIER_CRON: '' });
    await worker.shutdown();
    expect(await schedulers()).toEqual([{ id: 'cleanup', name: 'cleanup', pattern: '0 * * * *' }]);
    // loadConfig refuses it; a config built otherwise must not get it past BullMQ, which answers nothing for it.
    const config = configOf({ TIER_CRON: '' });
    const never = { ...config, maintenance: { ...config.maintenance, cleanupCron: '0 0 31 2,4 *' } };
    await expect(registerSchedules(queues, never, quietLog)).rejects.toThrow(/cleanup: "0 0 31 2,4 \*" has no next time/);
  });
});
