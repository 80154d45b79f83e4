/**
 * What one kind holds and another refuses: `migrate` and `restore-backup` report such an item in `failures` and go
 * on with the rest (before session 19 the whole job failed for good at the first one, the rest never copied).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backupJob } from '../../src/jobs/backup.js';
import { migrateJob } from '../../src/jobs/migrate.js';
import { restoreBackupJob } from '../../src/jobs/restore-backup.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { maintenanceFixture, type MaintenanceFixture } from './fixtures/maintenance.js';
import { Stores, type Kind } from './fidelity-support.js';

let f: MaintenanceFixture;
const stores = new Stores();
beforeAll(async () => {
  f = await maintenanceFixture('fidelity-refusals');
});
afterAll(async () => {
  await stores.close();
  await f?.close();
});

/** 2,040 bytes of ASCII metadata: within the contract's 2 KiB, over what s3 can send beside its own entries. */
const BIG_METADATA = { big: 'm'.repeat(2037) };
/** A content type the contract takes (Latin-1) and s3 refuses (printable ASCII only). */
const LATIN1_TYPE = 'text/plain; name="caf\u00e9"';
/** A key of 1,000 bytes with non-ASCII in it: its git write message "write <key>" cannot ride in s3 metadata. */
const LONG_UNICODE_KEY = `long/${'ü'.repeat(300)}/${'x'.repeat(1000 - 5 - 600 - 1)}`;

async function open(kind: Kind): Promise<StorageProvider> {
  const store = await stores.open(kind);
  if (store === undefined) throw new Error(`no ${kind}`);
  return store;
}

async function migrate(from: StorageProvider, to: StorageProvider, versions = true) {
  return (await migrateJob.handle({ from: 'from', to: 'to', versions }, f.context(new Map([['from', from], ['to', to]])))).result;
}

async function backupAndRestore(source: StorageProvider, vault: StorageProvider, target: StorageProvider) {
  const map = new Map<string, StorageProvider>([['media', source], ['vault', vault], ['restored', target]]);
  const settings = { backupStore: 'vault' };
  const backup = (await backupJob.handle({ store: 'media', versions: true }, f.context(map, { name: 'backup', settings }))).result;
  expect(backup).toMatchObject({ failureCount: 0 });
  return (await restoreBackupJob.handle({ manifest: backup.manifest, store: 'restored' }, f.context(map, { name: 'restore-backup', settings }))).result;
}

const REFUSED_BY_S3: [string, (disk: StorageProvider) => Promise<unknown>][] = [
  ['metadata within 2 KiB that s3 cannot send beside its own entries', (disk) => disk.write('refused', 'meta', { metadata: BIG_METADATA })],
  ['a Latin-1 content type', (disk) => disk.write('refused', 'type', { contentType: LATIN1_TYPE })],
  ['a key under .kyozo/', (disk) => disk.write('.kyozo/refused', 'reserved on s3')],
];

describe.each<Kind>(['s3', 'hybrid'])('disk -> %s: an object the target refuses', (toKind) => {
  const fill = async (disk: StorageProvider, refused: (disk: StorageProvider) => Promise<unknown>) => {
    await disk.write('a-ok', 'fine');
    await refused(disk);
    await disk.write('z-ok', 'also fine');
  };
  const refusedKey = async (disk: StorageProvider) => (await disk.list()).items.map((item) => item.key).find((key) => key.includes('refused'));

  it.each(REFUSED_BY_S3)('migrate reports %s in failures and copies the rest', async (_what, refused) => {
    const disk = await open('disk');
    await fill(disk, refused);
    const target = await open(toKind);
    const result = await migrate(disk, target);
    expect(result).toMatchObject({ objects: 3, copied: 2, verified: false, failureCount: 1 });
    expect(result.failures.map((failure) => failure.key)).toEqual([await refusedKey(disk)]);
    expect((await target.list()).items.map((item) => item.key)).toEqual(['a-ok', 'z-ok']);
  });

  it.each(REFUSED_BY_S3)('restore-backup reports %s in failures and restores the rest', async (_what, refused) => {
    const disk = await open('disk');
    await fill(disk, refused);
    const target = await open(toKind);
    const result = await backupAndRestore(disk, await open('disk'), target);
    expect(result).toMatchObject({ objects: 3, restored: 2, verified: false, failureCount: 1 });
    expect(result.failures.map((failure) => failure.key)).toEqual([await refusedKey(disk)]);
    expect((await target.list()).items.map((item) => item.key)).toEqual(['a-ok', 'z-ok']);
  });
});

describe('git -> s3: a git store\'s own version message the target cannot carry', () => {
  it('migrate reports the key and copies the rest (git writes "write <key>": a long non-ASCII key makes it too long for s3)', async () => {
    const git = await open('git');
    await git.write('a-ok', 'fine');
    await git.write(LONG_UNICODE_KEY, 'long');
    await git.write('z-ok', 'also fine');
    const s3 = await open('s3');
    const result = await migrate(git, s3);
    expect(result).toMatchObject({ objects: 3, failureCount: 1 });
    expect(result.failures.map((failure) => failure.key)).toEqual([LONG_UNICODE_KEY]);
    expect((await s3.list()).items.map((item) => item.key)).toContain('z-ok');
  });

  it('restore-backup into s3 reports the key and restores the rest', async () => {
    const git = await open('git');
    await git.write('a-ok', 'fine');
    await git.write(LONG_UNICODE_KEY, 'long');
    await git.write('z-ok', 'also fine');
    const s3 = await open('s3');
    const result = await backupAndRestore(git, await open('disk'), s3);
    expect(result).toMatchObject({ objects: 3, failureCount: 1 });
    expect(result.failures.map((failure) => failure.key)).toEqual([LONG_UNICODE_KEY]);
    expect((await s3.list()).items.map((item) => item.key)).toContain('z-ok');
  });
});

const REFUSED_BY_GIT: [string, (ram: StorageProvider) => Promise<unknown>][] = [
  ['a message with a line like a Kyozo trailer', (ram) => ram.createVersion('refused', 'v1', { message: 'fix typo\n\nKyozo-Forget-Versions: "other"' })],
  ['an author name with spaces around it', (ram) => ram.createVersion('refused', 'v1', { message: 'ok', author: { name: ' Ada ', email: 'ada@example.com' } })],
  ['a message with a NUL', (ram) => ram.createVersion('refused', 'v1', { message: 'a\u0000b' })],
];

describe('ram -> git: a version git refuses to record', () => {
  const fill = async (ram: StorageProvider, refused: (ram: StorageProvider) => Promise<unknown>) => {
    await ram.write('a-ok', 'fine');
    await refused(ram);
    await ram.write('z-ok', 'also fine');
  };

  it.each(REFUSED_BY_GIT)('migrate reports %s in failures and copies the rest', async (_what, refused) => {
    const ram = await open('ram');
    await fill(ram, refused);
    const git = await open('git');
    const result = await migrate(ram, git);
    expect(result).toMatchObject({ objects: 3, verified: false, failureCount: 1 });
    expect(result.failures.map((failure) => failure.key)).toEqual(['refused']);
    const keys = (await git.list()).items.map((item) => item.key);
    expect(keys).toContain('a-ok');
    expect(keys).toContain('z-ok');
  });

  it.each(REFUSED_BY_GIT)('restore-backup reports %s in failures and restores the rest', async (_what, refused) => {
    const ram = await open('ram');
    await fill(ram, refused);
    const git = await open('git');
    const result = await backupAndRestore(ram, await open('disk'), git);
    expect(result).toMatchObject({ objects: 3, verified: false, failureCount: 1 });
    expect(result.failures.map((failure) => failure.key)).toEqual(['refused']);
    const keys = (await git.list()).items.map((item) => item.key);
    expect(keys).toContain('a-ok');
    expect(keys).toContain('z-ok');
  });
});
