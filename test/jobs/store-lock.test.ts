/**
 * A store's backup lock whose holder's job is over — completed, failed for good, removed — is taken over at once by
 * the next backup or restore, instead of refusing them until it lapses 10 minutes later. This is what a run that
 * lost its job leaves when no other run took the job over (it failed for good after stalling). A live holder
 * (waiting, delayed, active) still holds it.
 */
import { Queue, UnrecoverableError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backupJob } from '../../src/jobs/backup.js';
import { PreconditionFailedError } from '../../src/providers/errors.js';
import { RamProvider } from '../../src/providers/ram.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { maintenanceFixture, type MaintenanceFixture } from './fixtures/maintenance.js';

let f: MaintenanceFixture;
let queue: Queue;
const stores = new Map<string, StorageProvider>([
  ['files', new RamProvider({ maxBytes: 1024 * 1024 })],
  ['vault', new RamProvider({ maxBytes: 1024 * 1024 })],
]);

beforeAll(async () => {
  f = await maintenanceFixture('store-lock');
  await stores.get('files')!.write('a', 'alpha');
  queue = new Queue('maintenance', { connection: f.redis.producer, prefix: f.redis.prefix });
  // One job completes, one fails for good, one waits an hour: the holders below.
  const worker = new Worker(
    'maintenance',
    async (job) => {
      if (job.name === 'fails') throw new UnrecoverableError('failed for good');
    },
    { connection: (f.redis.worker as Redis).duplicate(), prefix: f.redis.prefix },
  );
  const finished = new Promise<void>((resolve) => {
    let count = 0;
    const one = () => void (++count === 2 && resolve());
    worker.on('completed', one);
    worker.on('failed', one);
  });
  await queue.add('completes', {}, { jobId: 'maintenance-completed' });
  await queue.add('fails', {}, { jobId: 'maintenance-failed' });
  await queue.add('waits', {}, { jobId: 'maintenance-delayed', delay: 3_600_000 });
  // Ids a board user may type: one that reads as another queue's, one that reads as none.
  await queue.add('waits', {}, { jobId: 'objects-nightly', delay: 3_600_000 });
  await queue.add('waits', {}, { jobId: 'nightly', delay: 3_600_000 });
  await finished;
  await worker.close();
});
afterAll(async () => {
  await queue?.close();
  await f?.close();
});

const lockKey = () => `${f.redis.prefix}:backup-lock:files`;
const backup = () => backupJob.handle({ store: 'files' }, f.context(stores, { name: 'backup', settings: { backupStore: 'vault' }, queues: [queue] }));

describe('the backup lock of a job that is over', () => {
  it.each([
    ['completed', 'maintenance-completed'],
    ['failed for good, held as a restore', 'restore maintenance-failed'],
    ['removed', 'maintenance-removed-long-ago'],
  ])('is taken over when its holder is %s: the backup runs and releases it', async (_, holder) => {
    await f.redis.producer.set(lockKey(), holder, 'PX', 60_000);
    const { result } = await backup();
    expect(result).toMatchObject({ verified: true, objects: 1 });
    expect(await f.redis.producer.get(lockKey())).toBeNull();
  });

  it.each(['maintenance-delayed', 'objects-nightly', 'nightly'])('still holds while its job is live (%s): a second backup is refused and the lock stays', async (holder) => {
    await f.redis.producer.set(lockKey(), holder, 'PX', 60_000);
    await expect(backup()).rejects.toBeInstanceOf(PreconditionFailedError);
    expect(await f.redis.producer.get(lockKey())).toBe(holder);
    await f.redis.producer.del(lockKey());
  });

  it('is taken over from a finished job whatever its id reads as', async () => {
    await f.redis.producer.set(lockKey(), 'objects-long-gone', 'PX', 60_000);
    expect(await backup()).toMatchObject({ result: { verified: true } });
  });
});
