/**
 * The repair pass drops versions cold no longer has (an allVersions delete whose backup step failed), but a version
 * cold's listing leaves out because it cannot read it (a damaged disk record) is not gone: backup's copy of it is then
 * the only good one, and stays.
 */
import { mkdtemp, rm, readdir, open, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { DiskProvider } from '../../src/providers/disk.js';
import { ProviderUnavailableError } from '../../src/providers/errors.js';
import { createHybridProvider } from '../../src/providers/hybrid.js';
import { allVersions } from '../../src/providers/object-info.js';
import { RamProvider } from '../../src/providers/ram.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { closeRedis } from '../../src/redis.js';
import { connectRedis, deleteKeys, uniquePrefix } from '../support/redis.js';

const redis = await connectRedis('worker');
const prefix = uniquePrefix('hybrid-damaged-cold');
afterAll(async () => { await deleteKeys(redis, prefix); await closeRedis(redis); });

async function files(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) out.push(path.join(e.parentPath ?? (e as { path?: string }).path!, e.name));
  return out;
}

it('repair keeps the backup copy of a version cold cannot read (its damaged record left out of its listing)', async () => {
  const coldDir = await mkdtemp(path.join(os.tmpdir(), 'rl-cold-'));
  const backupDir = await mkdtemp(path.join(os.tmpdir(), 'rl-backup-'));
  const cold = new DiskProvider({ root: coldDir, fsync: false });
  const backup = new DiskProvider({ root: backupDir, fsync: false });
  let backupBroken = false;
  const guardedBackup = new Proxy(backup, { get(t, p) { const v = Reflect.get(t, p, t); if (typeof v !== 'function') return v;
    return async (...a: unknown[]) => { if (backupBroken && ['write', 'createVersion'].includes(String(p))) throw new Error('EIO'); return (v as Function).apply(t, a); }; } }) as StorageProvider;
  const store = await createHybridProvider({ name: 'rl', hot: new RamProvider({ maxBytes: 1 << 20 }), cold, backup: guardedBackup, redis, keyPrefix: prefix, accessThreshold: 1000, hotTtlSeconds: 3600, hotMaxBytes: 1 << 20 });
  const v1 = await store.createVersion('doc', 'precious v1', { message: 'v1' });
  await store.createVersion('doc', 'v2', { message: 'v2' });
  expect((await allVersions(backup, 'doc')).length).toBe(2);
  // cold's record of v1 gets damaged (bit rot): cold's listing now skips it
  const rec = (await files(coldDir)).find((f) => f.includes('versions') && f.endsWith(v1.versionId))!;
  const fh = await open(rec, 'r+'); const { size } = await stat(rec);
  await fh.write(Buffer.alloc(16, 0xff), 0, 16, size - 16); await fh.close();
  expect((await allVersions(cold, 'doc')).map((v) => v.versionId)).not.toContain(v1.versionId); // the premise
  // an unrelated later write whose backup step fails puts the key in the repair ledger
  backupBroken = true;
  await expect(store.write('doc', 'v3')).rejects.toBeInstanceOf(ProviderUnavailableError);
  backupBroken = false;
  await store.repairBackups();
  const inBackup = (await allVersions(backup, 'doc')).map((v) => v.message);
  await store.close();
  await rm(coldDir, { recursive: true, force: true }); await rm(backupDir, { recursive: true, force: true });
  expect(inBackup).toContain('v1');
});
