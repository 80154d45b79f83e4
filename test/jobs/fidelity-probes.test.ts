/** What `migrate` and `restore-backup` carry besides the data set of fidelity-support: large bodies, and times. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backupJob } from '../../src/jobs/backup.js';
import { migrateJob } from '../../src/jobs/migrate.js';
import { restoreBackupJob } from '../../src/jobs/restore-backup.js';
import { readAll, sha256Hex } from '../../src/providers/body.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { maintenanceFixture, type MaintenanceFixture } from './fixtures/maintenance.js';
import { Stores, type Kind } from './fidelity-support.js';

let f: MaintenanceFixture;
const stores = new Stores();
beforeAll(async () => {
  f = await maintenanceFixture('fidelity-probes');
});
afterAll(async () => {
  await stores.close();
  await f?.close();
});

async function open(kind: Kind): Promise<StorageProvider> {
  const store = await stores.open(kind);
  if (store === undefined) throw new Error(`no ${kind}`);
  return store;
}
const migrate = async (from: StorageProvider, to: StorageProvider) =>
  (await migrateJob.handle({ from: 'from', to: 'to', versions: true }, f.context(new Map([['from', from], ['to', to]])))).result;

describe('fidelity beyond the data set', () => {
  it('large bodies disk -> s3 -> (backup ram) -> git', async () => {
    const disk = await open('disk');
    const big = Buffer.alloc(20 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4096) big.writeUInt32BE(i, i);
    await disk.write('big', big, { contentType: 'application/x-big; a=b', metadata: { size: 'large' } });
    await disk.createVersion('bigv', big, { message: 'big version', author: { name: 'Ada' } });
    const s3 = await open('s3');
    const result = await migrate(disk, s3);
    expect(result).toMatchObject({ failureCount: 0, copied: 1, versions: 1 });
    expect(sha256Hex(await readAll((await s3.read('big')).body))).toBe(sha256Hex(big));
    const map = new Map<string, StorageProvider>([['media', s3], ['vault', await open('ram')], ['restored', await open('git')]]);
    const backup = (await backupJob.handle({ store: 'media', versions: true }, f.context(map, { name: 'backup', settings: { backupStore: 'vault' } }))).result;
    const restored = (await restoreBackupJob.handle({ manifest: backup.manifest, store: 'restored' }, f.context(map, { name: 'restore-backup', settings: { backupStore: 'vault' } }))).result;
    expect(restored).toMatchObject({ failureCount: 0 });
    const git = map.get('restored')!;
    expect(await git.stat('big')).toMatchObject({ etag: sha256Hex(big), contentType: 'application/x-big; a=b', metadata: { size: 'large' } });
    expect((await git.listVersions('bigv')).items.map((v) => [v.message, v.etag])).toEqual([['big version', sha256Hex(big)]]);
  });

  it('updatedAt after migrate and restore', async () => {
    const disk = await open('disk');
    await disk.write('k', 'v');
    await new Promise((r) => setTimeout(r, 20));
    for (const kind of ['ram', 'git', 's3', 'hybrid'] as Kind[]) {
      const to = await open(kind);
      await migrate(disk, to);
      const [a, b] = [await disk.stat('k'), await to.stat('k')];
      console.log('UPDATED', kind, a.updatedAt, b.updatedAt);
      expect(Date.parse(b.updatedAt)).toBeGreaterThanOrEqual(Date.parse(a.updatedAt));
    }
  });
});
