/**
 * `backup` and `restore-backup` where something in the backup store is damaged or busy: a bad version blob costs a
 * restore that version alone, a restore and a backup of the same store wait for each other, a damaged manifest stops
 * neither backups nor (for good) retention, and a damaged current object keeps its key's versions in the backup.
 * Real stores (disk and ram) and real Redis (the per-store lock).
 */
import { open } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backupJob, type BackupResult } from '../../src/jobs/backup.js';
import { LockBusyError } from '../../src/jobs/definition.js';
import { asJobFailure } from '../../src/jobs/failures.js';
import { blobKey, listManifests, readManifest, writeManifest } from '../../src/jobs/manifest.js';
import { restoreBackupJob } from '../../src/jobs/restore-backup.js';
import { sha256Hex } from '../../src/providers/body.js';
import { DiskProvider } from '../../src/providers/disk.js';
import { keyPath } from '../../src/providers/disk-layout.js';
import { ProviderUnavailableError, StorageFullError } from '../../src/providers/errors.js';
import { RamProvider } from '../../src/providers/ram.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { ALPHABET } from '../../src/providers/version-id.js';
import { interceptMethod } from '../support/intercept.js';
import { etags, fill, maintenanceFixture, type MaintenanceFixture } from './fixtures/maintenance.js';

/** Flips one byte of `key`'s record in a disk store: damage at rest that the store refuses to serve (DATA_CORRUPTED). */
async function damageAtRest(root: string, key: string, at = 3): Promise<void> {
  const record = await open(path.join(root, 'objects', keyPath(key)), 'r+');
  await record.write(Buffer.from('X'), 0, 1, at);
  await record.close();
}

describe('backup and restore-backup meeting damage and each other', () => {
  let f: MaintenanceFixture;

  beforeAll(async () => {
    f = await maintenanceFixture('backup-review');
  });

  afterAll(async () => {
    await f?.close();
  });

  it('a scrub that finds a damaged blob but cannot write its manifest removes nothing; the next scrub does, and the backup after copies it again', async () => {
    const files = new DiskProvider({ root: await f.tempDir('scrubbed-files'), fsync: false });
    const vaultRoot = await f.tempDir('scrubbed-vault');
    const vault = new DiskProvider({ root: vaultRoot, fsync: false });
    await files.write('a', 'alpha content');
    await files.write('b', 'beta content');
    const backupInto = async (target: StorageProvider, verify?: 'all') =>
      (await backupJob.handle({ store: 'files', verify }, f.context(new Map<string, StorageProvider>([['files', files], ['vault', target]]), { name: 'backup', settings: { backupStore: 'vault' } }))).result;
    await backupInto(vault);
    const blobOfA = blobKey('files', sha256Hex('alpha content'));
    await damageAtRest(vaultRoot, blobOfA);

    // The backup store is full when the scrub's manifest is written: the job fails, and the blob the previous
    // manifest vouches for is still there (removed, every later backup would skip it as vouched for, and lose "a").
    const full = interceptMethod(vault, 'write', (write) => async (key, body, opts) => {
      if (key.includes('/manifests/')) throw new StorageFullError('no space left on device');
      return write(key, body, opts);
    });
    await expect(backupInto(full, 'all')).rejects.toBeInstanceOf(StorageFullError);
    expect(await vault.stat(blobOfA).then(() => 'present', () => 'gone')).toBe('present');

    const scrub = await backupInto(vault, 'all');
    expect(scrub).toMatchObject({ verified: false, failures: [expect.objectContaining({ key: 'a' })] });
    expect(await vault.stat(blobOfA).then(() => 'present', () => 'gone')).toBe('gone');
    expect(await backupInto(vault)).toMatchObject({ verified: true, copied: 1 });
    expect((await vault.stat(blobOfA)).etag).toBe(sha256Hex('alpha content'));
  });

  it('a retry of a run that failed in its prune only prunes: no second manifest of the same content', async () => {
    const source = new RamProvider({ maxBytes: 1024 * 1024 });
    const vault = new DiskProvider({ root: await f.tempDir('prune-retry-vault'), fsync: false });
    await source.write('a', 'alpha');
    const settings = { backupStore: 'vault', backupKeep: 1 };
    const first = await backupJob.handle({ store: 'pruned' }, f.context(new Map<string, StorageProvider>([['pruned', source], ['vault', vault]]), { name: 'backup', settings }));
    await source.write('b', 'beta');
    // The backup store blips as the run deletes the manifest retention drops: the job fails after writing its own.
    let blips = 1;
    const blipping = interceptMethod(vault, 'delete', (remove) => async (key, opts) => {
      if (key === first.result.manifest && blips-- > 0) throw new ProviderUnavailableError('backup store blip');
      return remove(key, opts);
    });
    const stores = new Map<string, StorageProvider>([['pruned', source], ['vault', blipping]]);
    const failed = f.context(stores, { name: 'backup', settings });
    await expect(backupJob.handle({ store: 'pruned' }, failed)).rejects.toBeInstanceOf(ProviderUnavailableError);
    const [written] = await listManifests(vault, 'pruned');

    // The retry, as BullMQ runs it: the same job, its progress kept through JSON.
    const progress: unknown = JSON.parse(JSON.stringify(failed.progressLog.at(-1)));
    const { result } = await backupJob.handle({ store: 'pruned' }, f.context(stores, { name: 'backup', jobId: failed.job.id, progress, settings }));
    expect(result).toMatchObject({ manifest: written, objects: 2, copied: 1, verified: true, manifestsRemoved: 1 });
    expect(await listManifests(vault, 'pruned')).toEqual([written]);
  });

  it('keeps the manifest it just wrote when an earlier one came from a clock ahead of this one (BACKUP_KEEP=1)', async () => {
    const source = new RamProvider({ maxBytes: 1024 * 1024 });
    const vault = new DiskProvider({ root: await f.tempDir('skewed-vault'), fsync: false });
    const stores = new Map<string, StorageProvider>([['skewed', source], ['vault', vault]]);
    // A manifest id as a worker whose clock ran 5 minutes ahead made it (not minted here: that would move this
    // process's ids past it too).
    const base32 = (value: number, width: number) => Array.from({ length: width }, (_, i) => ALPHABET[Math.floor(value / 32 ** (width - 1 - i)) % 32]).join('');
    const aheadId = `${base32(Date.now() + 5 * 60_000, 11)}00000${'a'.repeat(10)}`;
    await writeManifest(vault, { id: aheadId, at: new Date().toISOString(), store: 'skewed', objects: [], unverified: [] });
    await source.write('k', 'new');
    const { result } = await backupJob.handle({ store: 'skewed' }, f.context(stores, { name: 'backup', settings: { backupStore: 'vault', backupKeep: 1 } }));
    expect(await listManifests(vault, 'skewed')).toEqual([result.manifest]);
    expect(result).toMatchObject({ objects: 1, manifestsRemoved: 1, verified: true });
  });

  const backupOf = (stores: Map<string, StorageProvider>, settings = {}) => async (payload: Parameters<typeof backupJob.handle>[0]) =>
    (await backupJob.handle(payload, f.context(stores, { name: 'backup', settings: { backupStore: 'vault', ...settings } }))).result;

  for (const how of ['damaged', 'missing'] as const) {
    it(`restore-backup skips a version whose blob is ${how}, reported with its id, and restores the key's other versions and object`, async () => {
      const source = new RamProvider({ maxBytes: 1024 * 1024 });
      await source.createVersion('doc', 'first draft', { message: 'v1' });
      const bad = await source.createVersion('doc', 'second draft', { message: 'v2' });
      await source.createVersion('doc', 'third draft', { message: 'v3' });
      await source.write('doc', 'the current text', { contentType: 'text/plain' });
      const vault = new DiskProvider({ root: await f.tempDir('vault'), fsync: false });
      const saved = await backupOf(new Map<string, StorageProvider>([['src', source], ['vault', vault]]))({ store: 'src', versions: true });
      expect(saved).toMatchObject({ objects: 1, versions: 3, verified: true });
      const blob = blobKey('src', sha256Hex('second draft'));
      if (how === 'damaged') await vault.write(blob, 'bit rot');
      else await vault.delete(blob);

      const target = new RamProvider({ maxBytes: 1024 * 1024 });
      const ctx = f.context(new Map<string, StorageProvider>([['vault', vault], ['target', target]]), { settings: { backupStore: 'vault' } });
      const { result } = await restoreBackupJob.handle({ manifest: saved.manifest, store: 'target' }, ctx);

      expect(result).toMatchObject({ restored: 1, versions: 2, verified: false, failureCount: 1 });
      expect(result.failures).toEqual([expect.objectContaining({ key: 'doc', etag: sha256Hex('second draft'), versionId: bad.versionId })]);
      expect((await target.listVersions('doc')).items.map((version) => version.message)).toEqual(['v3', 'v1']);
      expect((await target.stat('doc')).etag).toBe(sha256Hex('the current text'));
    });
  }

  it('a backup that starts while a restore of its store runs is retried later, and the restore finds every blob it needs', async () => {
    const source = new RamProvider({ maxBytes: 16 * 1024 * 1024 });
    const vault = new DiskProvider({ root: await f.tempDir('vault'), fsync: false });
    const backup = backupOf(new Map<string, StorageProvider>([['src', source], ['vault', vault]]), { backupKeep: 2 });
    await fill(source, 400, 'doc/', (i) => `monday ${i}`);
    const monday = await backup({ store: 'src' });
    const mondayEtags = await etags(source);
    await fill(source, 400, 'doc/', (i) => `tuesday ${i}`);
    await backup({ store: 'src' }); // two manifests kept: the next backup prunes monday's
    await fill(source, 400, 'doc/', (i) => `wednesday ${i}`);

    // A user rolls back to monday; the scheduled backup starts once the restore is under way.
    let scheduled: Promise<BackupResult | Error> | undefined;
    const racing = interceptMethod(vault, 'read', (read) => async (key, opts) => {
      scheduled ??= backup({ store: 'src' }).catch((error: Error) => error);
      if (key.includes('/blobs/')) await scheduled;
      return read(key, opts);
    });
    const target = new RamProvider({ maxBytes: 16 * 1024 * 1024 });
    const ctx = f.context(new Map<string, StorageProvider>([['vault', racing], ['target', target]]), { settings: { backupStore: 'vault', backupKeep: 2 } });
    const { result } = await restoreBackupJob.handle({ manifest: monday.manifest, store: 'target' }, ctx);

    expect(result).toMatchObject({ restored: 400, verified: true, failureCount: 0 });
    expect(await etags(target)).toEqual(mondayEtags);
    const waited = await scheduled;
    expect(waited).toBeInstanceOf(ProviderUnavailableError);
    expect(asJobFailure(waited).name).not.toBe('UnrecoverableError');
    // Its retry, after the restore, runs and prunes as usual.
    expect(await backup({ store: 'src' })).toMatchObject({ verified: true, manifestsRemoved: 1 });
  });

  it('a restore that finds a backup of its store running is retried later, not failed for good', async () => {
    const source = new RamProvider({ maxBytes: 1024 * 1024 });
    await source.write('a', 'alpha');
    const vault = new RamProvider({ maxBytes: 1024 * 1024 });
    const target = new RamProvider({ maxBytes: 1024 * 1024 });
    const stores = new Map<string, StorageProvider>([['busy', source], ['vault', vault], ['target', target]]);
    const saved = await backupOf(stores)({ store: 'busy' });
    const lock = `${f.redis.prefix}:backup-lock:busy`;
    await f.redis.producer.set(lock, 'maintenance-running-backup', 'PX', 60_000);
    const restore = () => restoreBackupJob.handle({ manifest: saved.manifest, store: 'target' }, f.context(stores, { jobId: 'maintenance-restore', settings: { backupStore: 'vault' } }));

    const refused = await restore().catch((error: Error) => error);
    expect(refused).toBeInstanceOf(ProviderUnavailableError);
    expect(asJobFailure(refused).name).not.toBe('UnrecoverableError');
    await f.redis.producer.del(lock);
    expect((await restore()).result).toMatchObject({ restored: 1, verified: true });
  });

  it('a backup whose try for the lock meets it just released is tried again, not failed as a second backup', async () => {
    const source = new RamProvider({ maxBytes: 1024 * 1024 });
    await source.write('a', 'alpha');
    const vault = new RamProvider({ maxBytes: 1024 * 1024 });
    const lock = `${f.redis.prefix}:backup-lock:released`;
    await f.redis.producer.set(lock, 'restore maintenance-ending', 'PX', 60_000);
    const ctx = f.context(new Map<string, StorageProvider>([['released', source], ['vault', vault]]), { name: 'backup', settings: { backupStore: 'vault' } });
    const redis = ctx.maintenance!.redis;
    // The restore ends between the backup's refused take of the lock and its look at who holds it.
    const releasing = new Proxy(redis, {
      get(target, property) {
        if (property !== 'get') return Reflect.get(target, property, target);
        return async (key: string) => {
          if (key === lock) await target.del(lock);
          return target.get(key);
        };
      },
    });
    const refused = await backupJob.handle({ store: 'released' }, { ...ctx, maintenance: { ...ctx.maintenance!, redis: releasing } }).catch((error: Error) => error);
    expect(refused).toBeInstanceOf(LockBusyError); // the worker parks it and tries again shortly
    expect((await backupJob.handle({ store: 'released' }, ctx)).result).toMatchObject({ objects: 1, verified: true });
  });

  it('a damaged newest manifest is read as none: the next backups run, check every blob again, and report it', async () => {
    const source = new RamProvider({ maxBytes: 1024 * 1024 });
    const vaultDir = await f.tempDir('vault');
    const vault = new DiskProvider({ root: vaultDir, fsync: false });
    const backup = backupOf(new Map<string, StorageProvider>([['src', source], ['vault', vault]]));
    await fill(source, 20, 'doc/', (i) => `content ${i}`);
    const first = await backup({ store: 'src' });
    await damageAtRest(vaultDir, first.manifest, 10);
    await source.write('doc/new', 'written after the damage');

    const next = await backup({ store: 'src' });
    expect(next).toMatchObject({ objects: 21, copied: 1, checked: 21, verified: false, failureCount: 1 });
    expect(next.failures).toEqual([expect.objectContaining({ key: first.manifest, reason: expect.stringContaining('every blob checked again') })]);
    expect(await backup({ store: 'src' })).toMatchObject({ checked: 0, verified: true });
    expect(await backup({ store: 'src', verify: 'all' })).toMatchObject({ checked: 21, verified: true });
  });

  it('retention that cannot read a kept manifest removes no blob while that manifest is kept, and reports it', async () => {
    const source = new RamProvider({ maxBytes: 1024 * 1024 });
    const vault = new RamProvider({ maxBytes: 1024 * 1024 });
    const backup = backupOf(new Map<string, StorageProvider>([['src', source], ['vault', vault]]), { backupKeep: 2 });
    const blobs = async () => [...(await etags(vault, 'backups/src/blobs/')).values()].sort();
    const run = async (text: string) => {
      await source.write('k', text);
      return backup({ store: 'src' });
    };
    await run('one');
    const two = await run('two');
    await vault.write(two.manifest, 'not a manifest any more');

    const three = await run('three');
    expect(three).toMatchObject({ manifestsRemoved: 1, blobsRemoved: 0, verified: false });
    expect(three.failures.map((failure) => [failure.key, failure.reason.endsWith('no blob is pruned while it is kept')])).toContainEqual([two.manifest, true]);
    expect(await blobs()).toEqual(['one', 'two', 'three'].map(sha256Hex).sort());

    // Once retention removed the unreadable manifest too, blobs no kept manifest needs go.
    const four = await run('four');
    expect(four).toMatchObject({ manifestsRemoved: 1, blobsRemoved: 2, verified: true });
    expect(await listManifests(vault, 'src')).toEqual([four.manifest, three.manifest]);
    expect(await blobs()).toEqual(['three', 'four'].map(sha256Hex).sort());
  });

  it("a key whose current object is damaged keeps its intact versions in the backup; the object is the only failure", async () => {
    const dir = await f.tempDir('src');
    const source = new DiskProvider({ root: dir, fsync: false });
    await source.createVersion('thesis', 'chapter one', { message: 'v1' });
    await source.createVersion('thesis', 'chapters one and two', { message: 'v2' });
    await source.write('thesis', 'chapters one, two and three');
    await damageAtRest(dir, 'thesis');
    const vault = new RamProvider({ maxBytes: 1024 * 1024 });

    const result = await backupOf(new Map<string, StorageProvider>([['src', source], ['vault', vault]]))({ store: 'src', versions: true });
    expect(result).toMatchObject({ objects: 0, versions: 2, verified: false, failureCount: 1 });
    expect(result.failures).toEqual([expect.objectContaining({ key: 'thesis', etag: sha256Hex('chapters one, two and three') })]);
    expect(result.failures[0]!.versionId).toBeUndefined();
    const manifest = await readManifest(vault, result.manifest);
    expect((manifest.versions ?? []).map((version) => version.message)).toEqual(['v1', 'v2']);
    expect([...(await etags(vault, 'backups/src/blobs/')).values()].sort()).toEqual(['chapter one', 'chapters one and two'].map(sha256Hex).sort());

    // Restored, such a key is reported rather than left out unsaid: the backup has its versions, not its object.
    const target = new RamProvider({ maxBytes: 1024 * 1024 });
    const restored = await restoreBackupJob.handle(
      { manifest: result.manifest, store: 'target' },
      f.context(new Map<string, StorageProvider>([['vault', vault], ['target', target]]), { settings: { backupStore: 'vault' } }),
    );
    expect(restored.result).toMatchObject({ restored: 0, versions: 0, verified: false, failureCount: 1 });
    expect(restored.result.failures).toEqual([expect.objectContaining({ key: 'thesis', reason: expect.stringContaining('not its object') })]);
  });
});
