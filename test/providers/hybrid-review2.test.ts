/**
 * Hybrid's versions as backup answers them during a cold outage, after failed backup steps, repair passes and
 * processes that overlap, and objects other tools put into cold. Real services: s3 cold (s3rver for explicit
 * versions; a natively versioned endpoint, moto when installed, for every-write), disk backup, ram hot, the test
 * Redis. Two stores opened on the same tiers stand for two processes; a test orders their steps by holding back
 * calls of one process's tiers.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DiskProvider } from '../../src/providers/disk.js';
import { ProviderUnavailableError } from '../../src/providers/errors.js';
import { createHybridProvider, type HybridProvider } from '../../src/providers/hybrid.js';
import { allVersions } from '../../src/providers/object-info.js';
import { RamProvider } from '../../src/providers/ram.js';
import { createS3Provider } from '../../src/providers/s3.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { closeRedis, type RedisConnection } from '../../src/redis.js';
import { connectRedis, deleteKeys, uniquePrefix } from '../support/redis.js';
import { beforeCalls } from '../support/intercept.js';
import { s3ProviderOptions, sharedS3, sharedVersionedS3 } from '../support/s3.js';
import { reachingColdOnly, readText } from './fixtures/hybrid-calls.js';

const endpoint = await sharedS3();
/** Natively versioned: the shared endpoint when it is, else moto when installed. */
const versioned = await sharedVersionedS3();
if (versioned.endpoint === undefined) console.log(`hybrid-review2: cold with native versioning not covered: ${versioned.reason}`);
const noNativeVersioning = versioned.endpoint === undefined;

const prefix = uniquePrefix('hybrid-review2');
let redis: RedisConnection;
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  redis = await connectRedis('worker');
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await deleteKeys(redis, prefix); // the ledger and the version maps are per store name
});
afterAll(async () => {
  await closeRedis(redis);
});

const CALLS = ['read', 'stat', 'list', 'listVersions', 'write', 'createVersion', 'restoreVersion', 'delete', 'deleteVersion'];
const MUTATIONS = ['write', 'createVersion', 'restoreVersion', 'delete', 'deleteVersion'];

/** Waited for before a call of one process's tier, by method name. */
type Holds = Partial<Record<string, () => Promise<void>>>;

/** A hold the first `parties` calls wait at until all of them have arrived; later calls pass. */
function meeting(parties: number): () => Promise<void> {
  let arrived = 0;
  let allThere!: () => void;
  const everyone = new Promise<void>((resolve) => (allThere = resolve));
  return async () => {
    if (++arrived === parties) allThere();
    if (arrived <= parties) await everyone;
  };
}

/** A promise and its resolve. */
function signal(): { done: Promise<void>; fire: () => void } {
  let fire!: () => void;
  const done = new Promise<void>((resolve) => (fire = resolve));
  return { done, fire };
}

interface Switches {
  /** Every call to cold fails as unavailable. */
  coldDown: boolean;
  /** Every mutation of backup fails with an I/O error. */
  backupBroken: boolean;
}

interface Process {
  store: HybridProvider;
  holds: { cold: Holds; backup: Holds };
}

/**
 * A hybrid store on a bucket of its own (natively versioned for `native`) and a disk backup; `open()` gives it as one
 * more process holds it: its own hot tier and holds, the tiers, ledger and version map shared.
 */
async function hybrid(mode: 'explicit' | 'native', options: { accessThreshold?: number } = {}) {
  const s3 = mode === 'native' ? versioned.endpoint! : endpoint;
  const bucket = await s3.createBucket({ versioning: mode === 'native' });
  const backupDir = await mkdtemp(path.join(os.tmpdir(), 'kyozo-hybrid-review2-'));
  const switches: Switches = { coldDown: false, backupBroken: false };
  const cold = await createS3Provider(s3ProviderOptions(s3, bucket));
  const backup = new DiskProvider({ root: backupDir, fsync: false });
  const opened: HybridProvider[] = [];
  const open = async (): Promise<Process> => {
    const holds: Process['holds'] = { cold: {}, backup: {} };
    const store = await createHybridProvider({
      name: 'review2',
      hot: new RamProvider({ maxBytes: 1024 * 1024 }),
      cold: beforeCalls(cold, CALLS, async (method) => {
        await holds.cold[method]?.();
        if (switches.coldDown) throw new ProviderUnavailableError('cold is down');
      }),
      backup: beforeCalls(backup, CALLS, async (method) => {
        await holds.backup[method]?.();
        if (switches.backupBroken && MUTATIONS.includes(method)) throw new Error('EIO');
      }),
      redis,
      keyPrefix: prefix,
      accessThreshold: options.accessThreshold ?? 1000, // no read promotes unless a test says so
      hotTtlSeconds: 3600,
      hotMaxBytes: 1024 * 1024,
    });
    opened.push(store);
    return { store, holds };
  };
  cleanups.push(async () => {
    await Promise.allSettled(opened.map((store) => store.close()));
    await rm(backupDir, { recursive: true, force: true });
    await s3.removeBucket(bucket).catch(() => undefined);
  });
  return { switches, open, backup, bucket, s3 };
}

/** `key`'s versions as listed, newest first: id, content and message. */
async function versionsOf(provider: StorageProvider, key: string) {
  return (await allVersions(provider, key)).map(({ versionId, etag, message }) => ({ versionId, etag, message }));
}

async function versionIds(provider: StorageProvider, key: string): Promise<string[]> {
  return (await allVersions(provider, key)).map((version) => version.versionId);
}

async function duringOutage<T>(switches: Switches, ask: () => Promise<T>): Promise<T> {
  switches.coldDown = true;
  try {
    return await ask();
  } finally {
    switches.coldDown = false;
  }
}

describe.each(['explicit', 'native'] as const)('versions deleted with allVersions (cold versioning %s)', (mode) => {
  const itWhenCovered = it.skipIf(mode === 'native' && noNativeVersioning);

  itWhenCovered('are not listed or read from backup during a later outage, though backup failed to delete them and the key was written again', async () => {
    const { switches, open } = await hybrid(mode);
    const { store } = await open();
    const secret = await store.createVersion('doc', 'secret draft', { message: 'draft' });
    await reachingColdOnly(switches, () => store.delete('doc', { allVersions: true }));
    await store.write('doc', 'public text'); // the key is used again before the next repair pass
    expect(await store.repairBackups()).toEqual({ repaired: 1, pending: 0 });
    const coldIds = await versionIds(store, 'doc');
    expect(coldIds).not.toContain(secret.versionId);

    await duringOutage(switches, async () => {
      expect(await versionIds(store, 'doc')).toEqual(coldIds);
      await expect(store.read('doc', { versionId: secret.versionId })).rejects.toBeInstanceOf(ProviderUnavailableError);
      expect(await readText(store, 'doc')).toEqual({ text: 'public text', tier: 'backup' });
    });
  });

  itWhenCovered('are dropped from backup by the repair when a mutation in another process linked one after the delete', async () => {
    const { switches, open, backup } = await hybrid(mode);
    const [a, b] = [await open(), await open()];
    const atBackup = signal();
    const released = signal();
    a.holds.backup.createVersion = async () => {
      atBackup.fire(); // cold holds the version now
      await released.done;
    };
    const made = a.store.createVersion('doc', 'secret draft', { message: 'draft' });
    await atBackup.done;
    await b.store.delete('doc', { allVersions: true });
    await b.store.write('doc', 'public text');
    released.fire();
    const secret = await made; // its copy landed in backup, and was linked, after the delete
    delete a.holds.backup.createVersion;

    expect(await a.store.repairBackups()).toEqual({ repaired: 1, pending: 0 });
    const coldIds = await versionIds(a.store, 'doc');
    expect(coldIds).not.toContain(secret.versionId);
    expect((await versionsOf(backup, 'doc')).map((version) => version.etag)).not.toContain(secret.etag);
    await duringOutage(switches, async () => {
      expect(await versionIds(a.store, 'doc')).toEqual(coldIds);
      await expect(a.store.read('doc', { versionId: secret.versionId })).rejects.toBeInstanceOf(ProviderUnavailableError);
      expect(await readText(a.store, 'doc')).toEqual({ text: 'public text', tier: 'backup' });
    });
  });
});

describe('a version copied into backup by two processes at once', () => {
  /** v1 in both tiers, v2 in cold only: each repair pass copies v2. */
  async function missingInBackup() {
    const { switches, open, backup } = await hybrid('explicit');
    const [a, b] = [await open(), await open()];
    await a.store.createVersion('doc', 'v1', { message: 'one' });
    await reachingColdOnly(switches, () => a.store.createVersion('doc', 'v2', { message: 'two' }));
    return { switches, a, b, backup };
  }

  /** Two repair passes that have both read cold before either copies into backup. */
  async function twoPassesAtOnce(a: Process, b: Process): Promise<void> {
    const bothRead = meeting(2);
    a.holds.backup.createVersion = b.holds.backup.createVersion = bothRead;
    await Promise.all([a.store.repairBackups(), b.store.repairBackups()]);
    delete a.holds.backup.createVersion;
    delete b.holds.backup.createVersion;
  }

  it('by two repair passes: backup keeps one copy, listed once during an outage', async () => {
    const { switches, a, b, backup } = await missingInBackup();
    const coldIds = await versionIds(a.store, 'doc');
    await twoPassesAtOnce(a, b);

    expect(await versionIds(backup, 'doc')).toHaveLength(2);
    expect(await duringOutage(switches, () => versionIds(a.store, 'doc'))).toEqual(coldIds);
  });

  it('by a repair pass and the mutation that made it in another process: backup keeps one copy, listed once', async () => {
    const { switches, a, b, backup } = await missingInBackup();
    const atListing = signal();
    const v3InCold = signal();
    const repaired = signal();
    // B's pass read the ledger, then lists cold once A's v3 is there; A's own copy of v3 lands after B's pass.
    b.holds.cold.listVersions = async () => {
      atListing.fire();
      await v3InCold.done;
    };
    a.holds.backup.createVersion = async () => {
      v3InCold.fire();
      await repaired.done;
    };
    const repair = b.store.repairBackups();
    await atListing.done;
    const made = a.store.createVersion('doc', 'v3', { message: 'three' });
    await repair;
    repaired.fire();
    await made;
    delete b.holds.cold.listVersions;
    delete a.holds.backup.createVersion;

    expect(await a.store.repairBackups()).toEqual({ repaired: 1, pending: 0 });
    const coldIds = await versionIds(a.store, 'doc');
    expect(coldIds).toHaveLength(3);
    expect(await versionIds(backup, 'doc')).toHaveLength(3);
    expect(await duringOutage(switches, () => versionIds(a.store, 'doc'))).toEqual(coldIds);
  });

  it('and then removed by version retention is not listed during an outage', async () => {
    const { switches, a, b } = await missingInBackup();
    await a.store.createVersion('doc', 'v3', { message: 'three' });
    const [, v2] = await versionIds(a.store, 'doc');
    await twoPassesAtOnce(a, b);
    await a.store.deleteVersion!('doc', v2!); // what the cleanup job does
    const coldIds = await versionIds(a.store, 'doc');
    expect(coldIds).not.toContain(v2);

    expect(await duringOutage(switches, () => versionIds(a.store, 'doc'))).toEqual(coldIds);
  });

  it('is listed once even when the map still names a second copy of it (linked by a version of hybrid that overwrote links)', async () => {
    const { switches, a, backup } = await missingInBackup();
    expect(await a.store.repairBackups()).toEqual({ repaired: 1, pending: 0 });
    const coldIds = await versionIds(a.store, 'doc');
    // What an overwriting link left: `c:<v2>` names the newer copy, the older copy's `b:` still names v2.
    const second = await backup.createVersion('doc', 'v2', { message: 'two' });
    await redis.hset(`${prefix}:hybrid:review2:versions:doc`, `b:${second.versionId}`, coldIds[0]!);

    expect(await duringOutage(switches, () => versionIds(a.store, 'doc'))).toEqual(coldIds);
  });
});

describe('an object another tool put into cold with metadata the contract refuses', () => {
  it('is served from cold past the promotion threshold, never promoted', async () => {
    const { open, s3, bucket } = await hybrid('explicit', { accessThreshold: 2 });
    const { store } = await open();
    const client = s3.client();
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: 'report.txt', Body: 'hello', ContentType: 'text/plain', Metadata: { 'file.name': 'report.txt' } }));
    client.destroy();

    for (let read = 1; read <= 3; read++) expect(await readText(store, 'report.txt'), `read ${read}`).toEqual({ text: 'hello', tier: 'cold' });
    expect(store.hot.has('report.txt')).toBe(false);
  });
});

describe('versions listed from backup during an outage (cold versioning every write)', () => {
  it.skipIf(noNativeVersioning)('carry no message where cold has none, and a user\'s own message "write" stays', async () => {
    const { switches, open } = await hybrid('native');
    const { store } = await open();
    await store.write('doc', 'one');
    await store.createVersion('doc', 'two', { message: 'write' });
    await store.write('doc', 'three');
    const fromCold = await versionsOf(store, 'doc');
    expect(fromCold.map((version) => version.message)).toEqual([undefined, 'write', undefined]);

    expect(await duringOutage(switches, () => versionsOf(store, 'doc'))).toEqual(fromCold);
  });

  it.skipIf(noNativeVersioning)('carry no message where cold has none after the repair copied them', async () => {
    const { switches, open } = await hybrid('native');
    const { store } = await open();
    await store.write('doc', 'one');
    await reachingColdOnly(switches, () => store.write('doc', 'two'));
    expect(await store.repairBackups()).toEqual({ repaired: 1, pending: 0 });
    const fromCold = await versionsOf(store, 'doc');

    expect(await duringOutage(switches, () => versionsOf(store, 'doc'))).toEqual(fromCold);
  });
});
