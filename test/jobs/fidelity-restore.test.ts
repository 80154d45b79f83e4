/**
 * backup (versions: true) of the awkward data set into a backup store of one kind, restore-backup into a
 * store of another kind: what arrives, and that a second restore changes nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backupJob } from '../../src/jobs/backup.js';
import { restoreBackupJob } from '../../src/jobs/restore-backup.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { maintenanceFixture, type MaintenanceFixture } from './fixtures/maintenance.js';
import { HISTORIES, seed, shortKey, snapshot, Stores, type Kind, type VersionState } from './fidelity-support.js';

let f: MaintenanceFixture;
const stores = new Stores();
beforeAll(async () => {
  f = await maintenanceFixture('fidelity-restore');
});
afterAll(async () => {
  await stores.close();
  await f?.close();
});

/** source kind, backup store kind, restore target kind */
const TRIPLES: [Kind, Kind, Kind][] = [
  ['disk', 's3', 'git'],
  ['git', 'disk', 'ram'],
  ['s3', 'git', 'hybrid'],
  ['hybrid', 'ram', 'disk'],
  ['s3v', 'disk', 'git'],
  ['ram', 's3v', 's3v'],
  ['disk', 'ram', 's3'],
];
const SHORT_KEY_TRIPLES: [Kind, Kind, Kind][] = [['git', 'disk', 's3'], ['git', 's3', 'hybrid']];

function comparable(history: VersionState[]) {
  return history.map(({ etag, size, message, author, contentType, metadata }) => ({ etag, size, message, author, contentType, metadata }));
}

describe.each([...TRIPLES.map(([a, b, c]) => [a, b, c, false] as const), ...SHORT_KEY_TRIPLES.map(([a, b, c]) => [a, b, c, true] as const)])('backup of %s into %s, restore-backup into %s (short keys only: %s)', (sourceKind, vaultKind, targetKind, shortOnly) => {
  it('the target holds the same keys, bytes, etags, types, metadata and histories; a second restore changes nothing', async (t) => {
    const source = await stores.open(sourceKind);
    const vault = await stores.open(vaultKind);
    const target = await stores.open(targetKind);
    if (source === undefined || vault === undefined || target === undefined) return t.skip();
    await seed(source, shortOnly ? shortKey : undefined);
    const before = await snapshot(source);
    const map = new Map<string, StorageProvider>([['media', source], ['vault', vault], ['restored', target]]);
    const settings = { backupStore: 'vault' };
    const backup = (await backupJob.handle({ store: 'media', versions: true }, f.context(map, { name: 'backup', settings }))).result;
    expect(backup, JSON.stringify(backup.failures)).toMatchObject({ objects: before.objects.length, failureCount: 0, verified: true });

    const restore = async () =>
      (await restoreBackupJob.handle({ manifest: backup.manifest, store: 'restored' }, f.context(map, { name: 'restore-backup', settings }))).result;
    const first = await restore();
    expect(first, JSON.stringify(first.failures)).toMatchObject({ objects: before.objects.length, failureCount: 0, verified: true });
    const after = await snapshot(target);
    expect(after.objects).toEqual(before.objects);
    for (const key of Object.keys(HISTORIES)) {
      expect.soft(comparable(after.versions[key]!), `${sourceKind}->${vaultKind}->${targetKind} history of ${key}`).toEqual(comparable(before.versions[key]!));
    }

    const second = await restore();
    expect(second).toMatchObject({ restored: 0, versions: 0, skipped: before.objects.length, failureCount: 0 });
    expect(await snapshot(target)).toEqual(after);
  });
});
