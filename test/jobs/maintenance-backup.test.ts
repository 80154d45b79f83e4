/**
 * `backup` and `restore-backup` handlers against real stores (disk and ram) and real Redis (the per-store lock):
 * incremental copies, verification that catches damaged blobs, retention, restore with identical etags.
 */
import { open } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backupJob, type BackupResult } from '../../src/jobs/backup.js';
import { blobKey, listManifests, readManifest } from '../../src/jobs/manifest.js';
import { restoreBackupJob } from '../../src/jobs/restore-backup.js';
import { sha256Hex } from '../../src/providers/body.js';
import { DiskProvider } from '../../src/providers/disk.js';
import { keyPath } from '../../src/providers/disk-layout.js';
import { PreconditionFailedError, InvalidArgumentError, ProviderUnavailableError } from '../../src/providers/errors.js';
import { RamProvider } from '../../src/providers/ram.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { newVersionId } from '../../src/providers/version-id.js';
import { interceptMethod } from '../support/intercept.js';
import { etags, fill, maintenanceFixture, type MaintenanceFixture } from './fixtures/maintenance.js';

const content = (i: number) => `object ${i} `.repeat(1 + (i % 7));

/** A store whose reads of one key serve other bytes than it holds (a failing disk, a bad cache). */
function corruptingReads(provider: StorageProvider, key: string): StorageProvider {
  return interceptMethod(provider, 'read', (read) => async (readKey, opts) => {
    const result = await read(readKey, opts);
    if (readKey !== key) return result;
    result.body.destroy();
    return { info: result.info, body: Readable.from([Buffer.from('bit rot')]) };
  });
}

describe('backup and restore-backup', () => {
  let f: MaintenanceFixture;
  let files: DiskProvider;
  let vault: DiskProvider;
  let vaultDir: string;
  let stores: Map<string, StorageProvider>;
  let first: BackupResult;

  const backup = async (payload: Parameters<typeof backupJob.handle>[0], overrides: Map<string, StorageProvider> = stores, settings = {}) =>
    (await backupJob.handle(payload, f.context(overrides, { name: 'backup', settings: { backupStore: 'vault', ...settings } }))).result;

  beforeAll(async () => {
    f = await maintenanceFixture('backup');
    files = new DiskProvider({ root: await f.tempDir('files'), fsync: false });
    vaultDir = await f.tempDir('vault');
    vault = new DiskProvider({ root: vaultDir, fsync: false });
    stores = new Map<string, StorageProvider>([
      ['files', files],
      ['vault', vault],
    ]);
    await fill(files, 1000, 'doc/', content);
    first = await backup({ store: 'files' });
  });

  afterAll(async () => {
    await f?.close();
  });

  it('backs up 1,000 objects, reads every copied blob back, and writes a manifest naming every key', async () => {
    expect(first).toMatchObject({ store: 'files', target: 'vault', objects: 1000, copied: 1000, skipped: 0, verified: true, checked: 1000, failureCount: 0 });
    const manifest = await readManifest(vault, first.manifest);
    expect(manifest.objects).toHaveLength(1000);
    const source = await etags(files);
    for (const entry of manifest.objects) {
      expect(entry.etag).toBe(source.get(entry.key));
      expect(entry).toMatchObject({ contentType: 'text/plain', metadata: { n: entry.key.slice('doc/'.length) } });
    }
    const blob = await vault.stat(blobKey('files', manifest.objects[0]!.etag));
    expect(blob.etag).toBe(manifest.objects[0]!.etag);
  });

  it('a second run copies only what changed; one content under two keys is copied once', async () => {
    for (let i = 0; i < 10; i++) await files.write(`doc/${i}`, `changed ${i}`);
    await files.write('new/a', 'same new content');
    await files.write('new/b', 'same new content');
    await files.delete('doc/999');
    const second = await backup({ store: 'files' });
    expect(second).toMatchObject({ objects: 1001, copied: 11, verified: true, checked: 11 });
    expect(second.skipped).toBe(1001 - 11);
    expect(second.bytes).toBe(10 * 'changed 0'.length + 'same new content'.length);
    const manifest = await readManifest(vault, second.manifest);
    expect(manifest.objects.find((entry) => entry.key === 'doc/3')?.etag).toBe(sha256Hex('changed 3'));
    expect(manifest.objects.some((entry) => entry.key === 'doc/999')).toBe(false);
  });

  it('a blob that reads back other than it was copied is reported with its key, and copied again by the next run', async () => {
    await files.write('fragile', 'precious bytes');
    const bad = blobKey('files', sha256Hex('precious bytes'));
    const result = await backup({ store: 'files' }, new Map<string, StorageProvider>([...stores, ['vault', corruptingReads(vault, bad)]]));
    expect(result.verified).toBe(false);
    expect(result.failures).toEqual([expect.objectContaining({ key: 'fragile', etag: sha256Hex('precious bytes') })]);
    expect((await readManifest(vault, result.manifest)).unverified).toEqual([sha256Hex('precious bytes')]);

    const next = await backup({ store: 'files' });
    expect(next).toMatchObject({ copied: 1, verified: true, checked: 1 });
  });

  it('verify "all" finds a blob damaged at rest since an earlier run', async () => {
    const etag = sha256Hex(content(500));
    const record = await open(path.join(vaultDir, 'objects', keyPath(blobKey('files', etag))), 'r+');
    await record.write(Buffer.from('X'), 0, 1, 0);
    await record.close();

    const incremental = await backup({ store: 'files' });
    expect(incremental).toMatchObject({ copied: 0, verified: true });

    const scrub = await backup({ store: 'files', verify: 'all' });
    expect(scrub.verified).toBe(false);
    expect(scrub.checked).toBeGreaterThanOrEqual(1000);
    expect(scrub.failures.map((failure) => failure.etag)).toEqual([etag]);
    expect(scrub.failures[0]!.key).toBe('doc/500');
  });

  it('restore-backup into an empty store gives identical etags, types and metadata', async () => {
    const latest = await backup({ store: 'files' });
    const empty = new RamProvider({ maxBytes: 64 * 1024 * 1024 });
    const ctx = f.context(new Map<string, StorageProvider>([...stores, ['restored', empty]]), { name: 'restore-backup', settings: { backupStore: 'vault' } });
    const { result, event } = await restoreBackupJob.handle({ manifest: latest.manifest, store: 'restored' }, ctx);
    expect(result).toMatchObject({ objects: latest.objects, restored: latest.objects, skipped: 0, verified: true });
    expect(event.type).toBe('backup.restored');
    expect(await etags(empty)).toEqual(await etags(files));
    const sample = await empty.stat('doc/42');
    expect(sample).toMatchObject({ contentType: 'text/plain', metadata: { n: '42' } });

    const again = await restoreBackupJob.handle({ manifest: latest.manifest, store: 'restored' }, ctx);
    expect(again.result).toMatchObject({ restored: 0, skipped: latest.objects });
  });

  it('a damaged blob is reported by restore-backup and never written into the store', async () => {
    const small = new RamProvider({ maxBytes: 1024 * 1024 });
    await small.write('a', 'alpha');
    await small.write('b', 'beta');
    const own = new Map<string, StorageProvider>([['small', small], ['vault', vault]]);
    const { manifest } = await backup({ store: 'small' }, own);
    const target = new RamProvider({ maxBytes: 1024 * 1024 });
    const damaged = corruptingReads(vault, blobKey('small', sha256Hex('beta')));
    const ctx = f.context(new Map<string, StorageProvider>([['vault', damaged], ['target', target]]), { settings: { backupStore: 'vault' } });
    const { result } = await restoreBackupJob.handle({ manifest, store: 'target' }, ctx);
    expect(result).toMatchObject({ restored: 1, verified: false, failures: [expect.objectContaining({ key: 'b' })] });
    expect([...(await etags(target)).keys()]).toEqual(['a']);
  });

  it('a restore resumed after a shutdown still reports a damaged blob met before it', async () => {
    const source = new RamProvider({ maxBytes: 16 * 1024 * 1024 });
    await fill(source, 300, 'doc/', content);
    const own = new Map<string, StorageProvider>([['source', source], ['vault', vault]]);
    const { manifest } = await backup({ store: 'source' }, own);
    const damaged = (await readManifest(vault, manifest)).objects[0]!;
    await vault.write(blobKey('source', damaged.etag), 'bit rot');

    const into = new DiskProvider({ root: await f.tempDir('into'), fsync: false });
    const withTarget = new Map<string, StorageProvider>([...own, ['into', into]]);
    // The first run stops for a shutdown right after its first page, which held the damaged blob.
    const abort = new AbortController();
    const firstRun = f.context(withTarget, { name: 'restore-backup', signal: abort.signal, settings: { backupStore: 'vault' } });
    const report = firstRun.reportProgress!;
    firstRun.reportProgress = async (progress) => {
      await report(progress);
      abort.abort();
    };
    await expect(restoreBackupJob.handle({ manifest, store: 'into' }, firstRun)).rejects.toMatchObject({ name: 'JobInterruptedError' });

    // The same job (it takes again the backup lock its interrupted run kept), resumed from its saved progress.
    // Through JSON, as BullMQ keeps a job's progress.
    const saved: unknown = JSON.parse(JSON.stringify(firstRun.progressLog.at(-1)));
    const resumedRun = f.context(withTarget, { name: 'restore-backup', jobId: firstRun.job.id, progress: saved, settings: { backupStore: 'vault' } });
    const { result } = await restoreBackupJob.handle({ manifest, store: 'into' }, resumedRun);
    expect(result).toMatchObject({ objects: 300, restored: 299, verified: false, failureCount: 1 });
    // Named, not only counted (before session 18 a resumed run listed none of the earlier runs' failures).
    expect(result.failures.map((failure) => failure.key)).toEqual([damaged.key]);
    await expect(into.stat(damaged.key)).rejects.toThrow();
  });

  it('a restore into a ram store picked up after a shutdown starts over: the next process\'s ram store is empty', async () => {
    const source = new RamProvider({ maxBytes: 16 * 1024 * 1024 });
    await fill(source, 300, 'ram/', content);
    const own = new Map<string, StorageProvider>([['ramsource', source], ['vault', vault]]);
    const { manifest } = await backup({ store: 'ramsource' }, own);
    const abort = new AbortController();
    const firstRun = f.context(new Map<string, StorageProvider>([...own, ['into', new RamProvider({ maxBytes: 16 * 1024 * 1024 })]]), {
      name: 'restore-backup',
      signal: abort.signal,
      settings: { backupStore: 'vault' },
    });
    const report = firstRun.reportProgress!;
    firstRun.reportProgress = async (progress) => {
      await report(progress);
      abort.abort();
    };
    await expect(restoreBackupJob.handle({ manifest, store: 'into' }, firstRun)).rejects.toMatchObject({ name: 'JobInterruptedError' });

    const empty = new RamProvider({ maxBytes: 16 * 1024 * 1024 });
    const resumedRun = f.context(new Map<string, StorageProvider>([...own, ['into', empty]]), { name: 'restore-backup', jobId: firstRun.job.id, progress: firstRun.progressLog.at(-1), settings: { backupStore: 'vault' } });
    const { result } = await restoreBackupJob.handle({ manifest, store: 'into' }, resumedRun);
    expect(result).toMatchObject({ objects: 300, restored: 300, verified: true });
    expect(await etags(empty)).toEqual(await etags(source));
  });

  it('a backup retried after a failure, with another backup run in between, keeps its own manifest as the newest', async () => {
    const source = new RamProvider({ maxBytes: 1024 * 1024 });
    await fill(source, 20, 'doc/', content);
    const own = new Map<string, StorageProvider>([['flaky', source], ['vault', vault]]);
    const settings = { backupKeep: 1 };
    // The first run fails on a transient read error; its lock is released, its progress kept for the retry.
    let failures = 1;
    const flaky = interceptMethod(source, 'read', (read) => async (...args) => {
      if (failures-- > 0) throw new Error('connection reset');
      return read(...args);
    });
    const firstRun = f.context(new Map<string, StorageProvider>([['flaky', flaky], ['vault', vault]]), { name: 'backup', jobId: 'maintenance-retried', settings: { backupStore: 'vault', ...settings } });
    await expect(backupJob.handle({ store: 'flaky' }, firstRun)).rejects.toThrow('connection reset');
    // The scheduled backup runs meanwhile; then the data changes and the first job is retried.
    await backup({ store: 'flaky' }, own, settings);
    await source.write('doc/new', 'after the scheduled run');
    const retryRun = f.context(own, { name: 'backup', jobId: 'maintenance-retried', progress: firstRun.progressLog[0], settings: { backupStore: 'vault', ...settings } });
    const retried = (await backupJob.handle({ store: 'flaky' }, retryRun)).result;

    expect(await listManifests(vault, 'flaky')).toEqual([retried.manifest]);
    expect((await readManifest(vault, retried.manifest)).objects.map((object) => object.key)).toContain('doc/new');
  });

  it('keeps the newest BACKUP_KEEP manifests and removes blobs that no kept manifest needs', async () => {
    const small = new RamProvider({ maxBytes: 1024 * 1024 });
    const own = new Map<string, StorageProvider>([['rotating', small], ['vault', vault]]);
    const runs: BackupResult[] = [];
    for (const text of ['one', 'two', 'three']) {
      await small.write('k', text);
      runs.push(await backup({ store: 'rotating' }, own, { backupKeep: 2 }));
    }
    expect(runs[2]).toMatchObject({ manifestsRemoved: 1, blobsRemoved: 1 });
    expect(await listManifests(vault, 'rotating')).toEqual([runs[2]!.manifest, runs[1]!.manifest]);
    expect([...(await etags(vault, 'backups/rotating/blobs/')).values()].sort()).toEqual([sha256Hex('three'), sha256Hex('two')].sort());
  });

  it('backs up versions with their messages and authors, and restores them oldest first', async () => {
    const versioned = new RamProvider({ maxBytes: 1024 * 1024 });
    await versioned.createVersion('doc', 'v1', { message: 'first', author: { name: 'Ada' }, contentType: 'text/markdown' });
    await versioned.createVersion('doc', 'v2', { message: 'second' });
    await versioned.write('doc', 'current, unversioned');
    const own = new Map<string, StorageProvider>([['versioned', versioned], ['vault', vault]]);
    const result = await backup({ store: 'versioned', versions: true }, own);
    expect(result).toMatchObject({ objects: 1, versions: 2, copied: 3, verified: true });

    const target = new RamProvider({ maxBytes: 1024 * 1024 });
    const ctx = f.context(new Map<string, StorageProvider>([['vault', vault], ['target', target]]), { settings: { backupStore: 'vault' } });
    const restored = await restoreBackupJob.handle({ manifest: result.manifest, store: 'target' }, ctx);
    expect(restored.result).toMatchObject({ versions: 2, restored: 1, verified: true });
    const versions = (await target.listVersions('doc')).items;
    expect(versions.map((version) => [version.message, version.etag, version.author?.name])).toEqual([
      ['second', sha256Hex('v2'), undefined],
      ['first', sha256Hex('v1'), 'Ada'],
    ]);
    expect((await target.stat('doc', { versionId: versions[1]!.versionId })).contentType).toBe('text/markdown');
    expect((await target.stat('doc')).etag).toBe(sha256Hex('current, unversioned'));
  });

  it('a restore continues a history it restored before, after retention trimmed the oldest versions of the source', async () => {
    const trimmed = new RamProvider({ maxBytes: 1024 * 1024 });
    const target = new RamProvider({ maxBytes: 1024 * 1024 });
    const own = new Map<string, StorageProvider>([['trimmed', trimmed], ['vault', vault], ['target', target]]);
    const restore = async (manifest: string) =>
      (await restoreBackupJob.handle({ manifest, store: 'target' }, f.context(own, { settings: { backupStore: 'vault' } }))).result;
    for (const text of ['v1', 'v2', 'v3']) await trimmed.createVersion('doc', text, { message: text });
    await restore((await backup({ store: 'trimmed', versions: true }, own)).manifest);
    await trimmed.createVersion('doc', 'v4', { message: 'v4' });
    await trimmed.deleteVersion('doc', (await trimmed.listVersions('doc')).items.at(-1)!.versionId);

    const again = await restore((await backup({ store: 'trimmed', versions: true }, own)).manifest);
    expect(again).toMatchObject({ versions: 1, verified: true, failureCount: 0 });
    expect((await target.listVersions('doc')).items.map((version) => version.message)).toEqual(['v4', 'v3', 'v2', 'v1']);
  });

  it('restore-backup reports a key whose versions are not restored because the store has a history of its own', async () => {
    const diverged = new RamProvider({ maxBytes: 1024 * 1024 });
    await diverged.createVersion('doc', 'ours', { message: 'ours' });
    const target = new RamProvider({ maxBytes: 1024 * 1024 });
    await target.createVersion('doc', 'theirs', { message: 'theirs' });
    const own = new Map<string, StorageProvider>([['diverged', diverged], ['vault', vault], ['target', target]]);
    const saved = await backup({ store: 'diverged', versions: true }, own);
    const { result } = await restoreBackupJob.handle({ manifest: saved.manifest, store: 'target' }, f.context(own, { settings: { backupStore: 'vault' } }));
    expect(result).toMatchObject({ versions: 0, restored: 1, verified: false, failureCount: 1, failures: [expect.objectContaining({ key: 'doc' })] });
    expect((await target.listVersions('doc')).items.map((version) => version.message)).toEqual(['theirs']);
    expect((await target.stat('doc')).etag).toBe(sha256Hex('ours'));
  });

  it('a backup of the backup store leaves out exactly its backup layout, and counts what it left out', async () => {
    await vault.write('notes/readme', 'kept with the vault');
    await vault.write('backups/db/manifests/latest.json', '{}'); // "latest" is no manifest id: a user's key
    const layout = (await etags(vault)).size - 2;
    const elsewhere = new RamProvider({ maxBytes: 64 * 1024 * 1024 });
    const result = await backup({ store: 'vault', target: 'elsewhere' }, new Map<string, StorageProvider>([...stores, ['elsewhere', elsewhere]]));
    const manifest = await readManifest(elsewhere, result.manifest);
    expect(manifest.objects.map((entry) => entry.key)).toEqual(['backups/db/manifests/latest.json', 'notes/readme']);
    expect(result.backupKeysLeftOut).toBe(layout);
  });

  it('a store that is not the backup store keeps keys that look like the backup layout', async () => {
    const plain = new RamProvider({ maxBytes: 1024 * 1024 });
    const lookalikes = ['backups/db/manifests/latest.json', 'backups/x/blobs/' + 'ab'.repeat(32), `backups/x/manifests/${newVersionId()}.json`];
    for (const key of lookalikes) await plain.write(key, `user data at ${key}`);
    const result = await backup({ store: 'plain' }, new Map<string, StorageProvider>([['plain', plain], ['vault', vault]]));
    expect(result).toMatchObject({ objects: 3, backupKeysLeftOut: 0, verified: true });
    expect((await readManifest(vault, result.manifest)).objects.map((entry) => entry.key)).toEqual([...lookalikes].sort());
  });

  it('a run that lost its job to another run of it writes no manifest, prunes nothing and leaves the lock to the other', async () => {
    // Its worker froze past the job's lock; another run of the same job (the same lock holder) took it over.
    const lockKey = `${f.redis.prefix}:backup-lock:files`;
    const before = await listManifests(vault, 'files');
    const ctx = f.context(stores, { name: 'backup', jobId: 'maintenance-frozen', settings: { backupStore: 'vault', backupKeep: 1 } });
    const lost = new Error('job maintenance-frozen is no longer this run\'s');
    await expect(backupJob.handle({ store: 'files' }, { ...ctx, fence: async () => Promise.reject(lost) })).rejects.toBe(lost);
    expect(await listManifests(vault, 'files')).toEqual(before); // with backupKeep 1 a commit would also have pruned
    expect(await f.redis.producer.get(lockKey)).toBe('maintenance-frozen');
    await f.redis.producer.del(lockKey);
  });

  it('a restore-backup run that lost its job writes nothing into the store and leaves the lock to the other run', async () => {
    const [manifest] = await listManifests(vault, 'files');
    const empty = new RamProvider({ maxBytes: 64 * 1024 * 1024 });
    const ctx = f.context(new Map<string, StorageProvider>([...stores, ['restored', empty]]), {
      name: 'restore-backup',
      jobId: 'maintenance-frozen-restore',
      settings: { backupStore: 'vault' },
    });
    const lost = new Error('job maintenance-frozen-restore is no longer this run\'s');
    await expect(restoreBackupJob.handle({ manifest: manifest!, store: 'restored' }, { ...ctx, fence: async () => Promise.reject(lost) })).rejects.toBe(lost);
    expect((await empty.list()).items).toEqual([]); // each write asks the fence right before it commits
    const lockKey = `${f.redis.prefix}:backup-lock:files`;
    expect(await f.redis.producer.get(lockKey)).toBe('restore maintenance-frozen-restore');
    await f.redis.producer.del(lockKey);
  });

  it('a run that lost its job leaves the lock to the other run however it ends: failing before a commit, or with nothing to write', async () => {
    const lockKey = `${f.redis.prefix}:backup-lock:files`;
    const lost = async () => Promise.reject(new Error('this run no longer holds its job'));
    // The run that took the job over holds the store lock, under the job's id as the lost run does.
    await f.redis.producer.set(lockKey, 'maintenance-frozen-2', 'PX', 60_000);
    const unavailable = interceptMethod(files, 'list', () => async () => {
      throw new ProviderUnavailableError('the source is briefly unavailable');
    });
    const failing = f.context(new Map<string, StorageProvider>([...stores, ['files', unavailable]]), { name: 'backup', jobId: 'maintenance-frozen-2', settings: { backupStore: 'vault' } });
    await expect(backupJob.handle({ store: 'files' }, { ...failing, fence: lost })).rejects.toBeInstanceOf(ProviderUnavailableError);
    expect(await f.redis.producer.get(lockKey)).toBe('maintenance-frozen-2');

    // A restore into a store that holds everything already writes nothing, so no write asks the fence.
    const [manifest] = await listManifests(vault, 'files');
    await f.redis.producer.set(lockKey, 'restore maintenance-frozen-3', 'PX', 60_000);
    const restoring = f.context(stores, { name: 'restore-backup', jobId: 'maintenance-frozen-3', settings: { backupStore: 'vault' } });
    const { result } = await restoreBackupJob.handle({ manifest: manifest!, store: 'files' }, { ...restoring, fence: lost });
    expect(result).toMatchObject({ restored: 0 });
    expect(await f.redis.producer.get(lockKey)).toBe('restore maintenance-frozen-3');
    await f.redis.producer.del(lockKey);
  });

  it('refuses a backup into the store itself, and a second backup of a store while one runs', async () => {
    await expect(backup({ store: 'vault' })).rejects.toBeInstanceOf(InvalidArgumentError);
    await f.redis.producer.set(`${f.redis.prefix}:backup-lock:files`, 'maintenance-other', 'PX', 60_000);
    await expect(backup({ store: 'files' })).rejects.toBeInstanceOf(PreconditionFailedError);
    await f.redis.producer.del(`${f.redis.prefix}:backup-lock:files`);
  });
});
