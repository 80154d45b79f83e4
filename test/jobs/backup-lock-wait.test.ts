/**
 * A backup that meets a restore of its store's backups waits for it through real workers, however long the restore
 * runs: the lock is no outage, so neither `UNAVAILABLE_RETRY_SECONDS` (here 300 ms) bounds the wait, as it did when a
 * scheduled backup behind a long restore failed, nor does the wait use up the job's attempts or count toward that
 * window afterwards. A store's real restore holds the lock in the first test, blocked in its target's writes; the
 * others hold it as a restore does (its key set under the restore's name).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProviderUnavailableError } from '../../src/providers/errors.js';
import { RamProvider } from '../../src/providers/ram.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { beforeCalls } from '../support/intercept.js';
import { defaultSettings } from './fixtures/maintenance.js';
import { startPipeline, waitFor, type Pipeline } from './fixtures/pipeline.js';

const WINDOW_MS = 300;

let p: Pipeline;
let letRestoreGo!: () => void;
const restoreHeld = new Promise<void>((resolve) => (letRestoreGo = resolve));
/** The next `list` of a store throws this, once. */
const failNextList = new Map<string, () => Error>();
const lists = new Map<string, number>();

function failingOnDemand(store: string): StorageProvider {
  return beforeCalls(new RamProvider({ maxBytes: 1024 * 1024 }), ['list'], () => {
    lists.set(store, (lists.get(store) ?? 0) + 1);
    const error = failNextList.get(store);
    failNextList.delete(store);
    if (error !== undefined) throw error();
  });
}

beforeAll(async () => {
  const stores = new Map<string, StorageProvider>([
    ['files', new RamProvider({ maxBytes: 1024 * 1024 })],
    ['vault', new RamProvider({ maxBytes: 1024 * 1024 })],
    ['target', beforeCalls(new RamProvider({ maxBytes: 1024 * 1024 }), ['write', 'createVersion'], () => restoreHeld)],
    ['blipped', failingOnDemand('blipped')],
    ['reset', failingOnDemand('reset')],
  ]);
  p = await startPipeline('backup-lock-wait', { stores, attempts: 3, backoffDelayMs: 20 });
  await p.startWorkers({
    queues: ['maintenance'],
    unavailableRetryMs: WINDOW_MS,
    maintenance: { settings: { ...defaultSettings, backupStore: 'vault' }, stagingProvider: p.stagingProvider, queues: [], redis: p.redis.worker, prefix: p.prefix },
  });
});

afterAll(async () => {
  letRestoreGo();
  await p?.close();
});

const jobOf = async (jobId: string) => (await p.queues.getJob(jobId))!;
const stateOf = async (jobId: string) => (await jobOf(jobId)).getState();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const holdLockAsRestore = (store: string) => p.redis.producer.set(`${p.prefix}:backup-lock:${store}`, 'restore maintenance-stand-in', 'PX', 60_000);
const releaseLock = (store: string) => p.redis.producer.del(`${p.prefix}:backup-lock:${store}`);
/** Parked behind the lock, woken at least `runs` times to find it still held. */
const waitingBehindLock = (jobId: string, runs = 3) =>
  waitFor(async () => (await stateOf(jobId)) === 'delayed' && (await jobOf(jobId)).attemptsStarted > runs, { what: `${jobId} waiting for the lock` });

describe('a backup behind a restore of its store', () => {
  it('waits past UNAVAILABLE_RETRY_SECONDS while the restore holds the lock, using up no attempt, then runs', async () => {
    await p.stores.get('files')!.write('a', 'alpha');
    const first = await p.queues.enqueue('backup', { store: 'files' });
    await p.waitForJobState(first.jobId, 'completed');
    const { manifest } = (await jobOf(first.jobId)).returnvalue as { manifest: string };

    const restore = await p.queues.enqueue('restore-backup', { manifest, store: 'target' });
    await waitFor(async () => (await stateOf(restore.jobId)) === 'active', { what: 'the restore under way' });
    const backup = await p.queues.enqueue('backup', { store: 'files' });
    await waitingBehindLock(backup.jobId);
    await sleep(4 * WINDOW_MS);

    const waiting = await jobOf(backup.jobId);
    // Parked, or woken this moment to try the lock again: not failed, not done.
    expect(['delayed', 'waiting', 'active']).toContain(await waiting.getState());
    expect(waiting.attemptsMade).toBe(0);
    expect(waiting.failedReason ?? undefined).toBeUndefined(); // its status shows no failure
    expect(await p.eventsOf(backup.jobId, 'job.failed')).toEqual([]);
    letRestoreGo();
    await p.waitForJobState(restore.jobId, 'completed');
    await p.waitForJobState(backup.jobId, 'completed');
    expect((await jobOf(backup.jobId)).returnvalue).toMatchObject({ verified: true });
  });

  it('after the wait, an outage starts a window of its own, even when one came before the wait', async () => {
    await p.stores.get('blipped')!.write('a', 'alpha');
    failNextList.set('blipped', () => new ProviderUnavailableError('cold tier down (a blip)'));
    const { jobId } = await p.queues.enqueue('backup', { store: 'blipped' });
    await waitFor(async () => (await jobOf(jobId)).attemptsMade === 1, { what: 'the first run failed on the outage' });
    await holdLockAsRestore('blipped');
    await waitingBehindLock(jobId);
    await sleep(2 * WINDOW_MS); // longer than the window since the first outage

    const before = lists.get('blipped') ?? 0;
    failNextList.set('blipped', () => new ProviderUnavailableError('cold tier down (a second blip)'));
    await releaseLock('blipped');
    await waitFor(() => (lists.get('blipped') ?? 0) > before, { what: 'the run after the wait' });
    await p.waitForJobState(jobId, 'completed');
    expect(await p.eventsOf(jobId, 'job.failed')).toEqual([]);
  });

  it('after the wait, a transient failure is retried as for any job: the wait used up no attempt', async () => {
    await p.stores.get('reset')!.write('a', 'alpha');
    await holdLockAsRestore('reset');
    const { jobId } = await p.queues.enqueue('backup', { store: 'reset' });
    await waitingBehindLock(jobId, 4); // more runs than the job has attempts

    const before = lists.get('reset') ?? 0;
    failNextList.set('reset', () => Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }));
    await releaseLock('reset');
    await waitFor(() => (lists.get('reset') ?? 0) > before, { what: 'the run after the wait' });
    await p.waitForJobState(jobId, 'completed');
    expect((await jobOf(jobId)).attemptsMade).toBe(2); // the failed run and the one that completed
    expect(await p.eventsOf(jobId, 'job.failed')).toEqual([]);
  });
});
