/**
 * A backup that meets a restore of its store's backups waits for it through real workers, however long the restore
 * runs: the lock is no outage, so `UNAVAILABLE_RETRY_SECONDS` (here 300 ms) does not bound the wait, as it did when
 * a scheduled backup behind a long restore failed. A store's real restore holds the lock, blocked in its target's
 * writes until the test lets it go.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RamProvider } from '../../src/providers/ram.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { beforeCalls } from '../support/intercept.js';
import { defaultSettings } from './fixtures/maintenance.js';
import { startPipeline, waitFor, type Pipeline } from './fixtures/pipeline.js';

const WINDOW_MS = 300;

let p: Pipeline;
let letRestoreGo!: () => void;
const restoreHeld = new Promise<void>((resolve) => (letRestoreGo = resolve));

beforeAll(async () => {
  const held = beforeCalls(new RamProvider({ maxBytes: 1024 * 1024 }), ['write', 'createVersion'], () => restoreHeld);
  const stores = new Map<string, StorageProvider>([
    ['files', new RamProvider({ maxBytes: 1024 * 1024 })],
    ['vault', new RamProvider({ maxBytes: 1024 * 1024 })],
    ['target', held],
  ]);
  p = await startPipeline('backup-lock-wait', { stores, attempts: 1, backoffDelayMs: 20 });
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

const stateOf = async (jobId: string) => (await p.queues.getJob(jobId))!.getState();

describe('a backup behind a restore of its store', () => {
  it('waits past UNAVAILABLE_RETRY_SECONDS while the restore holds the lock, then runs', async () => {
    await p.stores.get('files')!.write('a', 'alpha');
    const first = await p.queues.enqueue('backup', { store: 'files' });
    await p.waitForJobState(first.jobId, 'completed');
    const { manifest } = (await p.queues.getJob(first.jobId))!.returnvalue as { manifest: string };

    const restore = await p.queues.enqueue('restore-backup', { manifest, store: 'target' });
    await waitFor(async () => (await stateOf(restore.jobId)) === 'active', { what: 'the restore under way' });
    const backup = await p.queues.enqueue('backup', { store: 'files' });
    await waitFor(async () => (await (await p.queues.getJob(backup.jobId))!.attemptsStarted) > 1, { what: 'the backup refused once' });
    await new Promise((resolve) => setTimeout(resolve, 4 * WINDOW_MS));

    expect(await stateOf(backup.jobId)).not.toBe('failed');
    expect(await p.eventsOf(backup.jobId, 'job.failed')).toEqual([]);
    letRestoreGo();
    await p.waitForJobState(restore.jobId, 'completed');
    await p.waitForJobState(backup.jobId, 'completed');
    expect((await p.queues.getJob(backup.jobId))!.returnvalue).toMatchObject({ verified: true });
  });
});
