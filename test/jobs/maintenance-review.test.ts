/**
 * What the maintenance jobs must not do to a store someone else is using: a migration never overwrites what the
 * application wrote to the target (during the backfill or after the cutover), and a backup is never taken of a
 * hybrid store that serves from its backup tier. Real Redis (the backup lock, the hybrid's ledger), RAM and git
 * stores, and an in-memory invalidation bus for the hybrid stores.
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { backupJob, type BackupResult } from '../../src/jobs/backup.js';
import { listManifests } from '../../src/jobs/manifest.js';
import { restoreBackupJob } from '../../src/jobs/restore-backup.js';
import { migrateJob } from '../../src/jobs/migrate.js';
import { readAll, sha256Hex } from '../../src/providers/body.js';
import { ProviderUnavailableError } from '../../src/providers/errors.js';
import { DiskProvider } from '../../src/providers/disk.js';
import { createHybridProvider, type HybridProvider } from '../../src/providers/hybrid.js';
import type { HotChannel } from '../../src/providers/hybrid-invalidation.js';
import { RamProvider } from '../../src/providers/ram.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { gitFixture } from '../support/git.js';
import { interceptMethod } from '../support/intercept.js';
import { fill, maintenanceFixture, type MaintenanceFixture } from './fixtures/maintenance.js';

const ram = () => new RamProvider({ maxBytes: 16 * 1024 * 1024 });
const git = gitFixture('maintenance-review');

/** Waits long enough that what is written next is newer (`updatedAt` has millisecond resolution). */
const later = () => new Promise((resolve) => setTimeout(resolve, 5));

async function text(provider: StorageProvider, key: string): Promise<string> {
  return (await readAll((await provider.read(key)).body)).toString('utf8');
}

let f: MaintenanceFixture;

beforeAll(async () => {
  f = await maintenanceFixture('review');
});

afterAll(async () => {
  await f?.close();
});

const migrate = async (stores: Map<string, StorageProvider>, versions?: boolean) =>
  (await migrateJob.handle({ from: 'from', to: 'to', ...(versions ? { versions } : {}) }, f.context(stores))).result;

describe('migrate leaves what the target holds newer as it is', () => {

  it('into an empty target, an object the application writes there during the backfill is kept as a conflict', async () => {
    const from = ram();
    await fill(from, 50, 'k/', (i) => `old ${i}`);
    const to = ram();
    let cutover = false;
    // The application writes to the target (cut over already) while the migration reads the first objects.
    const source = interceptMethod(from, 'read', (read) => async (key, opts) => {
      if (!cutover) {
        cutover = true;
        await to.write('k/9', 'written by the application');
      }
      return read(key, opts);
    });
    const result = await migrate(new Map<string, StorageProvider>([['from', source], ['to', to]]));
    expect(await text(to, 'k/9')).toBe('written by the application');
    expect(result).toMatchObject({ objects: 50, copied: 49, conflictCount: 1, conflicts: [expect.objectContaining({ key: 'k/9' })], verified: true });
  });

  it('an object the application writes between the look at the target and the copy is kept: the copy is conditional', async () => {
    const target = ram();
    await target.write('older', 'in the target before the source');
    await later();
    const from = ram();
    await from.write('older', 'source');
    await from.write('absent', 'source');
    // Right after the migration looked at a key, the application writes it.
    const to = interceptMethod(target, 'stat', (stat) => async (key, opts) => {
      try {
        return await stat(key, opts);
      } finally {
        await target.write(key, `application's ${key}`);
      }
    });
    const result = await migrate(new Map<string, StorageProvider>([['from', from], ['to', to]]));
    expect(await text(target, 'absent')).toBe("application's absent");
    expect(await text(target, 'older')).toBe("application's older");
    expect(result).toMatchObject({ objects: 2, copied: 0, conflictCount: 2, verified: true });
  });

  it('a final pass after the cutover copies what changed in the source before it, and keeps what the application wrote after it', async () => {
    const from = ram();
    const to = ram();
    const stores = new Map<string, StorageProvider>([['from', from], ['to', to]]);
    await fill(from, 20, 'k/', (i) => `old ${i}`);
    expect(await migrate(stores)).toMatchObject({ copied: 20 });
    await later();
    await from.write('k/1', 'changed in the source before the cutover');
    await later();
    await to.write('k/7', 'written by the application after the cutover');

    const final = await migrate(stores);
    expect(await text(to, 'k/1')).toBe('changed in the source before the cutover');
    expect(await text(to, 'k/7')).toBe('written by the application after the cutover');
    expect(final).toMatchObject({ objects: 20, copied: 1, skipped: 18, conflictCount: 1, conflicts: [expect.objectContaining({ key: 'k/7' })], verified: true });
  });

  it('with versions, a final pass records no source version over an object the application wrote after the cutover', async () => {
    const from = ram();
    const to = ram();
    const stores = new Map<string, StorageProvider>([['from', from], ['to', to]]);
    await from.createVersion('doc', 'v1', { message: 'v1' });
    expect(await migrate(stores, true)).toMatchObject({ versions: 1 });
    await later();
    await from.createVersion('doc', 'v2', { message: 'v2' });
    await later();
    await to.write('doc', 'written by the application after the cutover');

    const final = await migrate(stores, true);
    expect((await to.stat('doc')).etag).toBe(sha256Hex('written by the application after the cutover'));
    expect((await to.listVersions('doc')).items.map((version) => version.message)).toEqual(['v1']);
    expect(final).toMatchObject({ versions: 0, copied: 0, conflictCount: 1, verified: true });
  });

  it('with versions into an every-write store, a final pass keeps an application write that brings back earlier content', async () => {
    const from = await git.openProvider(await git.tempRepo());
    const to = await git.openProvider(await git.tempRepo());
    const stores = new Map<string, StorageProvider>([['from', from], ['to', to]]);
    await from.write('cfg', 'X');
    await later();
    await from.write('cfg', 'Y');
    expect(await migrate(stores, true)).toMatchObject({ versions: 2 });
    await later();
    // A plain write is a version on git, with the same message the source's own write of X had.
    await to.write('cfg', 'X');

    const final = await migrate(stores, true);
    expect(await text(to, 'cfg')).toBe('X');
    expect(final).toMatchObject({ versions: 0, copied: 0, conflictCount: 1 });
  });
});

describe('versions that repeat, and versions that go while a backup reads them (session 9)', () => {
  const history = async (provider: StorageProvider, key: string) =>
    (await provider.listVersions(key)).items.reverse().map((version) => `${version.message}:${version.etag.slice(0, 8)}`);

  it('a migrate final pass copies the new versions of a history that came back to the content and message it had', async () => {
    const from = ram();
    const to = new DiskProvider({ root: await f.tempDir('repeat-to'), fsync: false });
    const stores = new Map<string, StorageProvider>([['from', from], ['to', to]]);
    await from.createVersion('cfg', 'config A', { message: 'autosave' });
    expect(await migrate(stores, true)).toMatchObject({ versions: 1 });
    await from.createVersion('cfg', 'config B', { message: 'autosave' });
    await from.createVersion('cfg', 'config A', { message: 'autosave' });

    expect(await migrate(stores, true)).toMatchObject({ versions: 2, verified: true });
    expect(await history(to, 'cfg')).toEqual(await history(from, 'cfg'));
    expect(await migrate(stores, true)).toMatchObject({ versions: 0 }); // and nothing more once they are all there
  });

  it('a migrate final pass into a target that retention trimmed to its newest versions copies none of them again', async () => {
    const from = ram();
    const to = ram();
    const stores = new Map<string, StorageProvider>([['from', from], ['to', to]]);
    for (const content of ['config A', 'config B', 'config A', 'config B', 'config A']) await from.createVersion('cfg', content, { message: 'autosave' });
    expect(await migrate(stores, true)).toMatchObject({ versions: 5 });
    for (const version of (await to.listVersions('cfg')).items.slice(3)) await to.deleteVersion('cfg', version.versionId); // retention 3
    const kept = await history(to, 'cfg');
    await later(); // the final passes are jobs of their own, enqueued after the first one's versions were recorded

    for (let pass = 0; pass < 3; pass++) expect(await migrate(stores, true)).toMatchObject({ versions: 0 });
    expect(await history(to, 'cfg')).toEqual(kept);
  });

  it('a restore-backup resumed after a shutdown mid-history records the rest of a history that repeats itself', async () => {
    const source = ram();
    const vault = ram();
    for (const content of ['config A', 'config B', 'config A']) await source.createVersion('cfg', content, { message: 'autosave' });
    const settings = { backupStore: 'vault' };
    const { result: backup } = await backupJob.handle({ store: 'src', versions: true }, f.context(new Map([['src', source], ['vault', vault]]), { settings }));
    const target = ram();
    const shutdown = new AbortController();
    const stopsAfterOne = interceptMethod(target, 'createVersion', (createVersion) => async (...args) => {
      const made = await createVersion(...args);
      shutdown.abort();
      return made;
    });
    const first = f.context(new Map<string, StorageProvider>([['vault', vault], ['target', stopsAfterOne]]), { signal: shutdown.signal, settings });
    await expect(restoreBackupJob.handle({ manifest: backup.manifest, store: 'target' }, first)).rejects.toMatchObject({ name: 'JobInterruptedError' });
    const resumed = f.context(new Map<string, StorageProvider>([['vault', vault], ['target', target]]), {
      progress: first.progressLog.at(-1),
      // The same job, run again: it takes again the backup lock its interrupted run kept.
      jobId: first.job.id,
      timestamp: first.job.timestamp,
      settings,
    });

    expect((await restoreBackupJob.handle({ manifest: backup.manifest, store: 'target' }, resumed)).result).toMatchObject({ versions: 2 });
    expect(await history(target, 'cfg')).toEqual(await history(source, 'cfg'));
  });

  it('a backup keeps the other versions of a key when retention removes one of them while it runs', async () => {
    const source = ram();
    const vault = ram();
    const settings = { backupStore: 'vault' };
    await source.createVersion('doc', 'draft 1', { message: 'v1' });
    await backupJob.handle({ store: 'src' }, f.context(new Map([['src', source], ['vault', vault]]), { settings })); // its blob is in the vault
    for (let i = 2; i <= 6; i++) await source.createVersion('doc', `draft ${i}`, { message: `v${i}` });
    const trimmedMeanwhile = interceptMethod(source, 'listVersions', (listVersions) => async (key, opts) => {
      const page = await listVersions(key, opts);
      await source.deleteVersion!(key, page.items.at(-1)!.versionId); // cleanup takes the oldest after it was listed
      return page;
    });
    const { result } = await backupJob.handle({ store: 'src', versions: true }, f.context(new Map([['src', trimmedMeanwhile], ['vault', vault]]), { settings }));
    expect(result).toMatchObject({ objects: 1, versions: 5, failureCount: 0 });
  });

  it('a migrate final pass keeps an application write of the last copied content as a conflict, not the migration\'s own', async () => {
    const from = ram();
    const to = new DiskProvider({ root: await f.tempDir('newer-to'), fsync: false });
    const stores = new Map<string, StorageProvider>([['from', from], ['to', to]]);
    await from.createVersion('page', 'release 1', { message: 'release 1' });
    await from.write('page', 'work in progress', { contentType: 'text/plain' });
    expect(await migrate(stores, true)).toMatchObject({ copied: 1, versions: 1 });
    await later();
    await to.write('page', 'release 1', { contentType: 'text/plain' }); // after the cutover: release 1 back

    expect(await migrate(stores, true)).toMatchObject({ copied: 0, conflictCount: 1 });
    expect(await text(to, 'page')).toBe('release 1');
  });
});

describe('backup of a hybrid store that serves from its backup tier', () => {
  const opened: HybridProvider[] = [];

  afterEach(async () => {
    await Promise.all(opened.splice(0).map((store) => store.close()));
  });

  /** A hybrid store over `cold` and `backup` (RAM), as one process holds it; `name` keeps the tests' ledgers apart. */
  async function hybrid(name: string, cold: StorageProvider, backup: StorageProvider): Promise<HybridProvider> {
    const channel: HotChannel = { live: true, publish: async () => {}, subscribe: async () => async () => {} };
    const store = await createHybridProvider({
      name,
      hot: ram(),
      cold,
      backup,
      redis: f.redis.worker,
      keyPrefix: f.redis.prefix,
      accessThreshold: 1000,
      hotTtlSeconds: 3600,
      hotMaxBytes: 1024 * 1024,
      channel,
    });
    opened.push(store);
    return store;
  }

  /** `provider` whose `methods` (all when left out) fail as unavailable while `isDown()`: an outage of the cold tier. */
  function outage(provider: StorageProvider, isDown: () => boolean, methods?: string[]): StorageProvider {
    return new Proxy(provider, {
      get(target, property) {
        const value = Reflect.get(target, property, target) as unknown;
        if (typeof value !== 'function') return value;
        const method = (value as (...args: unknown[]) => unknown).bind(target);
        if (property === 'close' || (methods !== undefined && !methods.includes(String(property)))) return method;
        return (...args: unknown[]) => (isDown() ? Promise.reject(new ProviderUnavailableError('cold is down')) : method(...args));
      },
    });
  }

  const backup = async (store: StorageProvider, vault: StorageProvider, backupKeep = 7): Promise<BackupResult> => {
    const stores = new Map<string, StorageProvider>([['media', store], ['vault', vault]]);
    return (await backupJob.handle({ store: 'media' }, f.context(stores, { name: 'backup', settings: { backupStore: 'vault', backupKeep } }))).result;
  };

  it('fails as unavailable while the cold tier is down, and the complete manifests stay', async () => {
    const [cold, backupTier, vault] = [ram(), ram(), ram()];
    const store = await hybrid('media-cold-down', cold, backupTier);
    await store.write('price', 'price: 100');
    await store.write('report', 'monthly');
    const complete = await backup(store, vault, 1);
    // Cold took what backup never got (its follow-up lost): backup lags, which the next repair pass would set right.
    await cold.write('price', 'price: 250');
    await cold.write('invoice-7', 'only cold has it');

    const degraded = await hybrid('media-cold-down', outage(cold, () => true), backupTier);
    await expect(backup(degraded, vault, 1)).rejects.toBeInstanceOf(ProviderUnavailableError);
    expect(await listManifests(vault, 'media')).toEqual([complete.manifest]);
  });

  it('fails as unavailable when an object it reads is served by the backup tier', async () => {
    const [cold, backupTier, vault] = [ram(), ram(), ram()];
    const store = await hybrid('media-cold-reads-down', cold, backupTier);
    await store.write('a', 'first');
    await store.write('b', 'second');

    // Cold lists and answers its health check, but its reads fail: they go to the backup tier.
    const degraded = await hybrid('media-cold-reads-down', outage(cold, () => true, ['read']), backupTier);
    await expect(backup(degraded, vault)).rejects.toBeInstanceOf(ProviderUnavailableError);
    expect(await listManifests(vault, 'media')).toEqual([]);
  });

  it('fails as unavailable, before writing its manifest, when the cold tier goes down while it lists', async () => {
    const [cold, backupTier, vault] = [ram(), ram(), ram()];
    const store = await hybrid('media-cold-goes-down', cold, backupTier);
    await fill(store, 250, 'k/', (i) => `object ${i}`);
    const complete = await backup(store, vault);
    expect(complete).toMatchObject({ objects: 250, verified: true });

    // The first page comes from cold, the second from backup; every blob is known, so nothing is read.
    let down = false;
    const failing = interceptMethod(cold, 'list', (list) => async (opts) => {
      const page = await list(opts);
      down = true;
      return page;
    });
    const degraded = await hybrid('media-cold-goes-down', outage(failing, () => down), backupTier);
    await expect(backup(degraded, vault)).rejects.toBeInstanceOf(ProviderUnavailableError);
    expect(await listManifests(vault, 'media')).toEqual([complete.manifest]);
  });
});

describe('content a store refuses as damaged', () => {
  it('is a failure of its item: a backup stores the rest, and a verify of the damaged blob reports it', async () => {
    const root = await git.tempRepo(); // a temporary directory, as good for a disk store
    const disk = new DiskProvider({ root, fsync: false });
    await disk.write('a', 'intact');
    await disk.write('b', 'damaged at rest');
    // One byte of b's content changed where it is stored: the disk store refuses to serve it (DATA_CORRUPTED).
    const file = path.join(root, 'objects', 'b~');
    const bytes = await readFile(file);
    bytes[0] = bytes[0]! ^ 0xff;
    await writeFile(file, bytes);
    const vault = ram();
    const stores = new Map<string, StorageProvider>([['files', disk], ['vault', vault]]);
    const { result } = await backupJob.handle({ store: 'files' }, f.context(stores, { name: 'backup', settings: { backupStore: 'vault' } }));
    expect(result).toMatchObject({ objects: 1, failureCount: 1, failures: [expect.objectContaining({ key: 'b', reason: expect.stringMatching(/damaged/) })] });
    await disk.close();
  });

  it('a damaged old version is a failure of that version: the key and its other versions are backed up (session 10)', async () => {
    const root = await git.tempRepo();
    const disk = new DiskProvider({ root, fsync: false });
    const made = [];
    for (let v = 1; v <= 3; v++) made.push(await disk.createVersion('doc', `version ${v}`, { message: `v${v}` }));
    const file = path.join(root, 'versions', 'doc~', made[0]!.versionId);
    const bytes = await readFile(file);
    bytes[0] = bytes[0]! ^ 0xff;
    await writeFile(file, bytes);
    const vault = ram();
    const stores = new Map<string, StorageProvider>([['files', disk], ['vault', vault]]);
    const { result } = await backupJob.handle({ store: 'files', versions: true }, f.context(stores, { name: 'backup', settings: { backupStore: 'vault' } }));
    expect(result).toMatchObject({ objects: 1, versions: 2, failureCount: 1 });
    expect(result.failures[0]).toMatchObject({ key: 'doc', etag: made[0]!.etag, versionId: made[0]!.versionId, reason: expect.stringMatching(/damaged/) });
    await disk.close();
  });

  it('migrate and restore-backup never put content that differs from what was checked over a good object (session 10)', async () => {
    // migrate: a source record over 64 KiB rotted at rest (the disk store re-hashes only smaller ones as it reads).
    const target = ram();
    const intact = await target.write('doc', 'an older, intact copy');
    await later();
    const root = await git.tempRepo();
    const source = new DiskProvider({ root, fsync: false });
    const content = Buffer.alloc(200 * 1024, 'a');
    await source.write('doc', content);
    const file = path.join(root, 'objects', 'doc~');
    const bytes = await readFile(file);
    bytes[1000] = 0x5a;
    await writeFile(file, bytes);
    const migrated = await migrate(new Map<string, StorageProvider>([['from', source], ['to', target]]));
    expect(migrated).toMatchObject({ verified: false, failureCount: 1 });
    expect((await target.stat('doc')).etag).toBe(intact.etag);
    await source.close();

    // restore-backup: a blob over 8 MiB is hashed on one read and written from a second, which comes back damaged.
    const files = ram();
    const big = Buffer.alloc(9 * 1024 * 1024, 'b');
    await files.write('big', big);
    const vault = ram();
    const stores = new Map<string, StorageProvider>([['files', files], ['vault', vault]]);
    const { result: backup } = await backupJob.handle({ store: 'files' }, f.context(stores, { name: 'backup', settings: { backupStore: 'vault' } }));
    let reads = 0;
    const flaky = interceptMethod(vault, 'read', (read) => async (key, opts) => {
      const served = await read(key, opts);
      if (!key.endsWith(sha256Hex(big)) || ++reads !== 2) return served;
      served.body.destroy();
      const damaged = Buffer.from(big);
      damaged[5_000_000] = 0;
      return { info: served.info, body: Readable.from([damaged]) };
    });
    const live = ram();
    const kept = await live.write('big', 'intact live content');
    const restoring = new Map<string, StorageProvider>([['vault', flaky], ['live', live]]);
    const { result } = await restoreBackupJob.handle({ manifest: backup.manifest, store: 'live' }, f.context(restoring, { name: 'restore-backup', settings: { backupStore: 'vault' } }));
    expect(result).toMatchObject({ restored: 0, verified: false, failureCount: 1 });
    expect((await live.stat('big')).etag).toBe(kept.etag);
  });
});
