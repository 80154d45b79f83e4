/**
 * Review: a backup run whose worker froze in the middle of its prune (after its last fence check), or in the write of
 * its manifest (after the fence before it), past the job's
 * lock. BullMQ takes the job as stalled: (a) another run of the same job finishes it, or (b) it fails for good and the
 * next backup takes the store lock over. A newer backup then runs to completion. When the frozen run wakes, it goes on
 * with the prune it had started — listing the blobs now there and deleting every one its own (stale) set of kept
 * manifests does not name: the blobs the newer run just copied and its manifest vouches for. Frozen in its manifest
 * write instead, it lands a manifest (older id than the newer run's) naming a blob the newer run's prune removed.
 *
 * Through real workers and BullMQ (lock 1 s, stalled check every 300 ms); the freeze is Atomics.wait (the whole
 * process, so BullMQ cannot renew the lock) followed by a wait the test ends.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readAll, sha256Hex } from '../../src/providers/body.js';
import { blobKey, listManifests, manifestEtags, manifestPrefix, readManifest } from '../../src/jobs/manifest.js';
import { RamProvider } from '../../src/providers/ram.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { interceptMethod } from '../support/intercept.js';
import { defaultSettings } from './fixtures/maintenance.js';
import { startPipeline, waitFor, type Pipeline } from './fixtures/pipeline.js';

const LOCK_MS = 1_000;

describe.each([
  // Frozen in prune (after finishWithPrune's fence), before deleting the manifest it prunes. BACKUP_KEEP 1.
  ['its prune', 'delete', 1, 'retried by another run of the same job', 5],
  ['its prune', 'delete', 1, 'failed for good (maxStalledCount 0), the lock taken over', 0],
  // Frozen in writeManifest (after the fence before it), before the manifest lands. BACKUP_KEEP 1.
  ['its manifest write', 'write', 1, 'retried by another run of the same job', 5],
  ['its manifest write', 'write', 1, 'failed for good (maxStalledCount 0), the lock taken over', 0],
] as const)('a backup run frozen in %s (%s) with BACKUP_KEEP %i past its job lock, %s (maxStalledCount %i)', (_, freezeIn, backupKeep, _how, maxStalledCount) => {
  let p: Pipeline;
  const files = new RamProvider({ maxBytes: 1024 * 1024 });
  const vaultRam = new RamProvider({ maxBytes: 1024 * 1024 });
  let armed = false;
  let frozen: (() => void) | undefined;
  let lastOp = Date.now();
  const deletesAfterWake: string[] = [];
  let woken = false;

  beforeAll(async () => {
    // The first manifest delete after `armed` (the prune of J1, after its fence passed) freezes the process past the
    // lock, then waits for the test.
    const freezeOn = async (key: string) => {
      lastOp = Date.now();
      if (armed && key.startsWith(manifestPrefix('files'))) {
        armed = false;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, LOCK_MS * 1.5);
        await new Promise<void>((resolve) => (frozen = resolve));
        woken = true;
      }
    };
    const listing = interceptMethod(vaultRam, 'list', (list) => async (opts) => {
      lastOp = Date.now();
      return list(opts);
    });
    const deleting = interceptMethod(listing, 'delete', (del) => async (key, opts) => {
      if (freezeIn === 'delete') await freezeOn(key);
      else lastOp = Date.now();
      if (woken) deletesAfterWake.push(key);
      return del(key, opts);
    });
    const vault: StorageProvider = interceptMethod(deleting, 'write', (write) => async (key, body, opts) => {
      if (freezeIn === 'write') await freezeOn(key);
      else lastOp = Date.now();
      if (woken) deletesAfterWake.push(`write ${key}`);
      return write(key, body, opts);
    });
    p = await startPipeline(`backup-frozen-${freezeIn}-${maxStalledCount}`, { stores: new Map<string, StorageProvider>([['files', files], ['vault', vault]]) });
    await p.startWorkers({
      queues: ['maintenance'],
      concurrency: 2,
      lockDurationMs: LOCK_MS,
      stalledIntervalMs: 300,
      maxStalledCount,
      maintenance: {
        settings: { ...defaultSettings, backupStore: 'vault', backupKeep },
        stagingProvider: p.stagingProvider,
        queues: [p.queues.queue('maintenance')],
        redis: p.redis.worker,
        prefix: p.prefix,
      },
    });
  });

  afterAll(async () => {
    frozen?.();
    await p?.close();
  });

  it('leaves every blob that any manifest in the vault names in place and intact', async () => {
    await files.write('a', 'v0');
    const b0 = await p.queues.enqueue('backup', { store: 'files' });
    await p.waitForJobState(b0.jobId, 'completed');

    await files.write('a', 'v1');
    armed = true;
    const j1 = await p.queues.enqueue('backup', { store: 'files' });
    await waitFor(() => frozen !== undefined, { what: 'J1 frozen in its prune' });
    // BullMQ takes J1 as stalled: another run of it completes it (the prune-only retry), or it fails for good.
    await p.waitForJobState(j1.jobId, maxStalledCount > 0 ? 'completed' : 'failed');

    // A newer backup with new content: it copies two blobs and writes the newest manifest.
    await files.write('a', 'v2');
    await files.write('b', 'brand new');
    const j2 = await p.queues.enqueue('backup', { store: 'files' });
    await p.waitForJobState(j2.jobId, 'completed');
    const [newest] = await listManifests(vaultRam, 'files');
    const needed = [...manifestEtags(await readManifest(vaultRam, newest!))];
    expect(needed.sort()).toEqual([sha256Hex('v2'), sha256Hex('brand new')].sort());
    for (const etag of needed) expect((await vaultRam.stat(blobKey('files', etag))).etag).toBe(etag);

    // J1's frozen run wakes up and finishes its prune.
    frozen!();
    await waitFor(() => woken && Date.now() - lastOp > 1_500, { what: 'the woken run done with the vault' });

    // Every manifest in the vault (what a restore-backup may be given) has all its blobs, intact.
    const missing: string[] = [];
    for (const manifest of await listManifests(vaultRam, 'files')) {
      for (const etag of manifestEtags(await readManifest(vaultRam, manifest))) {
        const blob = await vaultRam.read(blobKey('files', etag)).catch(() => undefined);
        if (blob === undefined || sha256Hex(await readAll(blob.body)) !== etag) missing.push(`${manifest.split('/').pop()} needs ${etag.slice(0, 12)}`);
      }
    }
    expect({ afterWake: deletesAfterWake.map((key) => key.replace(/[0-9a-f]{52}$/, '…')), missing }).toEqual({ afterWake: expect.any(Array), missing: [] });
  });
});
