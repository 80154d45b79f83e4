/**
 * Hybrid's answers from the backup tier while cold is down, and tiering passes against the hot budget, on real
 * services: s3 cold (a bucket of the shared test endpoint), disk backup, ram hot, the test Redis. Cold is taken down,
 * and backup made to fail, by wrapping the tier: every call then fails as an outage (or an I/O error) would.
 */
import { mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DiskProvider } from '../../src/providers/disk.js';
import { encodeVersionsCursor } from '../../src/providers/cursor.js';
import { ProviderUnavailableError } from '../../src/providers/errors.js';
import { loadConfig, storeConfig } from '../../src/config.js';
import { createProvider } from '../../src/providers/index.js';
import { createHybridProvider, type HybridProvider, type TieringPlan } from '../../src/providers/hybrid.js';
import { localHotChannel } from '../../src/providers/hybrid-invalidation.js';
import { describeWrite } from '../../src/providers/metadata.js';
import { RamProvider, ramWriteBytes } from '../../src/providers/ram.js';
import { createS3Provider } from '../../src/providers/s3.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { newVersionId } from '../../src/providers/version-id.js';
import { closeRedis, type RedisConnection } from '../../src/redis.js';
import { beforeCalls, interceptMethod } from '../support/intercept.js';
import { connectRedis, deleteKeys, TEST_REDIS_URL, uniquePrefix } from '../support/redis.js';
import { s3ProviderOptions, sharedS3 } from '../support/s3.js';
import { reachingColdOnly, readText } from './fixtures/hybrid-calls.js';

const endpoint = await sharedS3();
const prefix = uniquePrefix('hybrid-review');
let redis: RedisConnection;
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  redis = await connectRedis('worker');
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await deleteKeys(redis, prefix); // the pending ledger and the read counts are per store name
});
afterAll(async () => {
  await closeRedis(redis);
});

/** `provider` whose calls of `methods` fail with what `fault` returns, while it returns an error, or never end ('hang'). */
function faulty(provider: StorageProvider, methods: readonly string[], fault: () => Error | 'hang' | undefined): StorageProvider {
  return beforeCalls(provider, methods, async () => {
    const error = fault();
    if (error === 'hang') await new Promise(() => undefined);
    if (error !== undefined) throw error;
  });
}

const EVERY_CALL = ['read', 'stat', 'list', 'listVersions', 'write', 'createVersion', 'restoreVersion', 'delete', 'deleteVersion', 'stats', 'health'];
const MUTATIONS = ['write', 'createVersion', 'restoreVersion', 'delete', 'deleteVersion'];

interface Switches {
  /** Every call to cold fails as unavailable. */
  coldDown: boolean;
  /** Every mutation of backup fails with an I/O error. */
  backupBroken: boolean;
  /** Every call to hot fails as unavailable (a disk or s3 hot tier can be down). */
  hotDown: boolean;
  /** Every mutation of backup never ends: the process making it stands for one that died there. */
  backupHangs: boolean;
}

/** A hybrid store on s3 cold and disk backup of its own, whose tiers `switches` can take down. */
async function hybrid(
  options: { hotMaxBytes?: number; maxHotObjectBytes?: number } = {},
): Promise<{ store: HybridProvider; switches: Switches; twin(): Promise<HybridProvider> }> {
  const bucket = await endpoint.createBucket();
  const backupDir = await mkdtemp(path.join(os.tmpdir(), 'kyozo-hybrid-review-'));
  const switches: Switches = { coldDown: false, backupBroken: false, hotDown: false, backupHangs: false };
  const hotMaxBytes = options.hotMaxBytes ?? 1024 * 1024;
  const cold = faulty(await createS3Provider(s3ProviderOptions(endpoint, bucket)), EVERY_CALL, () =>
    switches.coldDown ? new ProviderUnavailableError('cold is down') : undefined,
  );
  const backup = faulty(new DiskProvider({ root: backupDir, fsync: false }), MUTATIONS, () =>
    switches.backupHangs ? 'hang' : switches.backupBroken ? new Error('EIO') : undefined,
  );
  const opened: HybridProvider[] = [];
  /** The store as one process has it: its own hot tier, the shared cold and backup tiers, ledger and channel. */
  const open = async () => {
    const store = await createHybridProvider({
      name: 'review',
      hot: faulty(new RamProvider({ maxBytes: Math.max(hotMaxBytes, 1024 * 1024) }), EVERY_CALL, () =>
        switches.hotDown ? new ProviderUnavailableError('hot is down') : undefined,
      ),
      cold,
      backup,
      redis,
      keyPrefix: prefix,
      accessThreshold: 1000, // no read promotes: only tiering passes do
      hotTtlSeconds: 3600,
      hotMaxBytes,
      maxHotObjectBytes: options.maxHotObjectBytes,
    });
    opened.push(store);
    return store;
  };
  const store = await open();
  cleanups.push(async () => {
    await Promise.allSettled(opened.map((each) => each.close()));
    await rm(backupDir, { recursive: true, force: true });
    await endpoint.removeBucket(bucket).catch(() => undefined);
  });
  return { store, switches, twin: open };
}

describe('reads from backup while cold is down', () => {
  it('a key whose last write did not reach backup is unavailable, not served with its older content', async () => {
    const { store, switches } = await hybrid();
    await store.write('price', 'price: 100');
    await store.write('menu', 'soup');
    await reachingColdOnly(switches, () => store.write('price', 'price: 250'));

    switches.coldDown = true;
    await expect(store.read('price')).rejects.toBeInstanceOf(ProviderUnavailableError);
    await expect(store.stat('price')).rejects.toBeInstanceOf(ProviderUnavailableError);
    expect(await readText(store, 'menu')).toEqual({ text: 'soup', tier: 'backup' });
  });

  it('a key whose delete did not reach backup is unavailable, not brought back', async () => {
    const { store, switches } = await hybrid();
    await store.write('secret', 'api key: hunter2');
    await reachingColdOnly(switches, () => store.delete('secret'));

    switches.coldDown = true;
    await expect(store.read('secret')).rejects.toBeInstanceOf(ProviderUnavailableError);
    await expect(store.stat('secret')).rejects.toBeInstanceOf(ProviderUnavailableError);
  });

  it('a listing that covers such a key is unavailable; pages and prefixes that do not are served', async () => {
    const { store, switches } = await hybrid();
    await store.write('a/menu', 'soup');
    await store.write('b/price', 'price: 100');
    await reachingColdOnly(switches, () => store.write('b/price', 'price: 250'));

    switches.coldDown = true;
    expect((await store.list({ prefix: 'a/' })).items.map((item) => item.key)).toEqual(['a/menu']);
    const first = await store.list({ limit: 1 });
    expect(first.items.map((item) => item.key)).toEqual(['a/menu']);
    await expect(store.list({ limit: 1, cursor: first.cursor })).rejects.toBeInstanceOf(ProviderUnavailableError);
    await expect(store.list({ prefix: 'b/' })).rejects.toBeInstanceOf(ProviderUnavailableError);
    await expect(store.list()).rejects.toBeInstanceOf(ProviderUnavailableError);
    await expect(store.listVersions('b/price')).rejects.toBeInstanceOf(ProviderUnavailableError);
  });

  it('a version retention removed from cold is not listed or read from backup, even when removing its copy failed', async () => {
    const { store, switches } = await hybrid();
    const old = await store.createVersion('doc', 'old draft', { message: 'old' });
    const kept = await store.createVersion('doc', 'new draft', { message: 'new' });
    switches.backupBroken = true;
    await expect(store.deleteVersion!('doc', old.versionId)).rejects.toThrow('EIO');
    switches.backupBroken = false;

    switches.coldDown = true;
    expect((await store.listVersions('doc')).items.map((version) => version.versionId)).toEqual([kept.versionId]);
    await expect(store.read('doc', { versionId: old.versionId })).rejects.toMatchObject({ code: 'PROVIDER_UNAVAILABLE' });
    expect(await readText(store, 'doc')).toEqual({ text: 'new draft', tier: 'backup' });
  });

  it('a key whose writer died between cold and backup is flagged by a repair pass even while cold is down (session 11)', async () => {
    const { store: dying, switches, twin } = await hybrid();
    const other = await twin(); // another process on the same store
    await dying.write('doc', 'v1');
    switches.backupHangs = true;
    void dying.write('doc', 'v2').catch(() => undefined); // reaches cold, then its process "dies" at backup
    await new Promise((resolve) => setTimeout(resolve, 300));
    switches.backupHangs = false;
    expect((await readText(other, 'doc')).text).toBe('v2');
    switches.coldDown = true;
    expect(await other.repairBackups({ abandonedAfterMs: 0 })).toEqual({ repaired: 0, pending: 1 });
    // Readers saw v2: backup's v1 is not served in its place while cold is down.
    await expect(other.read('doc')).rejects.toBeInstanceOf(ProviderUnavailableError);
    switches.coldDown = false;
    expect(await other.repairBackups({ abandonedAfterMs: 0 })).toEqual({ repaired: 1, pending: 0 });
    switches.coldDown = true;
    expect((await readText(other, 'doc')).text).toBe('v2');
  });

  it('a key whose write failed at cold (it may not have landed) is still served from backup', async () => {
    const { store, switches } = await hybrid();
    await store.write('doc', 'before the outage');
    switches.coldDown = true;
    await expect(store.write('doc', 'during the outage')).rejects.toBeInstanceOf(ProviderUnavailableError);
    expect(await readText(store, 'doc')).toEqual({ text: 'before the outage', tier: 'backup' });
    // A repair pass during the outage (the tier job's schedule) leaves it so: only an abandoned mutation is flagged.
    expect(await store.repairBackups({ abandonedAfterMs: 0 })).toEqual({ repaired: 0, pending: 1 });
    expect(await readText(store, 'doc')).toEqual({ text: 'before the outage', tier: 'backup' });
  });
});

describe('paging versions across a cold outage', () => {
  /** Pages of `key`'s versions, `limit` at a time, from `cursor`; `between` runs before each page. The ids seen. */
  async function pageVersions(store: HybridProvider, key: string, between: (page: number) => void): Promise<string[]> {
    const seen: string[] = [];
    let cursor: string | undefined;
    for (let page = 0; page === 0 || cursor !== undefined; page++) {
      between(page);
      const { items, cursor: next } = await store.listVersions(key, { limit: 2, cursor });
      seen.push(...items.map((version) => version.versionId));
      cursor = next;
    }
    return seen;
  }

  it('lists every version once, in order and under its cold id, whichever tier answers each page', async () => {
    const { store, switches } = await hybrid();
    for (let i = 1; i <= 7; i++) await store.createVersion('doc', `rev ${i}`, { message: `rev ${i}` });
    const coldIds = (await store.listVersions('doc')).items.map((version) => version.versionId);

    // Page 0 from cold, pages 1 and 2 from backup, page 3 from cold again.
    const seen = await pageVersions(store, 'doc', (page) => (switches.coldDown = page === 1 || page === 2));
    expect(seen).toEqual(coldIds);
  });

  it('goes on past a version whose map entry was lost: backup leaves it out, cold lists it again', async () => {
    const { store, switches } = await hybrid();
    for (let i = 1; i <= 5; i++) await store.createVersion('doc', `rev ${i}`, { message: `rev ${i}` });
    const coldIds = (await store.listVersions('doc')).items.map((version) => version.versionId);
    const lost = coldIds[3]!; // the last of backup's page, from the second page on
    const map = `${prefix}:hybrid:review:versions:doc`;
    await redis.hdel(map, `c:${lost}`, `b:${(await redis.hget(map, `c:${lost}`))!}`);

    switches.coldDown = true;
    expect(await pageVersions(store, 'doc', () => undefined)).toEqual(coldIds.filter((id) => id !== lost));
    expect(await pageVersions(store, 'doc', (page) => (switches.coldDown = page === 1))).toEqual(coldIds);
  });

  it('answers a cursor naming a version the map does not know as unavailable, not with a page from elsewhere', async () => {
    const { store, switches } = await hybrid();
    for (let i = 1; i <= 3; i++) await store.createVersion('doc', `rev ${i}`, { message: `rev ${i}` });

    switches.coldDown = true;
    const unknown = encodeVersionsCursor('doc', newVersionId());
    await expect(store.listVersions('doc', { limit: 1, cursor: unknown })).rejects.toBeInstanceOf(ProviderUnavailableError);
  });
});

describe('a tiering pass against the hot budget', () => {
  const keys = Array.from({ length: 20 }, (_, i) => `k${String(i).padStart(2, '0')}`); // most read first, as planned

  it('promotes the most read keys that fit, counts only those, and the same plan again changes nothing', async () => {
    // Room for ten copies, each charged what its ram store charges (content, key, type, 256 per entry).
    const { store } = await hybrid({ hotMaxBytes: 10 * ramWriteBytes('k00', 100, describeWrite({})), maxHotObjectBytes: 100 });
    for (const key of keys) await store.write(key, Buffer.alloc(100, key));
    const plan: TieringPlan = { promote: keys, demote: [] };
    const fitting = keys.slice(0, 10);

    expect(await store.applyTiering(plan)).toEqual({ promoted: 10, promotedBytes: 1000, demoted: 0, demotedBytes: 0, skipped: 10 });
    expect(keys.filter((key) => store.hot.has(key))).toEqual(fitting);
    expect(await store.applyTiering(plan)).toEqual({ promoted: 0, promotedBytes: 0, demoted: 0, demotedBytes: 0, skipped: 20 });
    expect(keys.filter((key) => store.hot.has(key))).toEqual(fitting);
  });

  it('never evicts a key the plan keeps to make room for another it promotes', async () => {
    const charge = (key: string) => ramWriteBytes(key, 100, describeWrite({}));
    // Room for three copies: 'top' with 'new' and one of the others.
    const { store } = await hybrid({ hotMaxBytes: charge('top') + charge('other-1') + charge('other-2'), maxHotObjectBytes: 100 });
    for (const key of ['top', 'other-1', 'other-2', 'new']) await store.write(key, Buffer.alloc(100, key));
    for (const key of ['top', 'other-1', 'other-2']) await store.applyTiering({ promote: [key], demote: [] });
    // 'top' is now the least recently read copy, 'other-1' the next.

    expect(await store.applyTiering({ promote: ['top', 'new'], demote: [] })).toMatchObject({ promoted: 1, skipped: 1 });
    expect(['top', 'other-1', 'other-2', 'new'].filter((key) => store.hot.has(key))).toEqual(['top', 'other-2', 'new']);
  });
});

describe('a repair pass cut short by a cold outage (session 10)', () => {
  it('never leaves backup answering with an older state than the one acknowledged', async () => {
    const state = { loseAnswer: false, coldDown: false, cutAfterBackupVersion: false };
    const cold = new Proxy(new RamProvider({ maxBytes: 1024 * 1024 }), {
      get(target, property) {
        const value = Reflect.get(target, property, target) as unknown;
        if (typeof value !== 'function') return value;
        const method = (value as (...args: unknown[]) => Promise<unknown>).bind(target);
        return async (...args: unknown[]) => {
          if (state.coldDown && EVERY_CALL.includes(String(property))) throw new ProviderUnavailableError('cold is down');
          const result = await method(...args);
          if (property === 'createVersion' && state.loseAnswer) {
            state.loseAnswer = false;
            throw new ProviderUnavailableError('the version landed, its answer was lost');
          }
          return result;
        };
      },
    }) as StorageProvider;
    // Cold's outage begins right after the repair copied a missing older version into backup.
    const backup = interceptMethod(new RamProvider({ maxBytes: 1024 * 1024 }), 'createVersion', (createVersion) => async (...args) => {
      const made = await createVersion(...args);
      if (state.cutAfterBackupVersion) [state.cutAfterBackupVersion, state.coldDown] = [false, true];
      return made;
    });
    const store = await createHybridProvider({
      ...{ name: 'repair-cut', hot: new RamProvider({ maxBytes: 1024 * 1024 }), cold, backup, redis, keyPrefix: prefix },
      ...{ accessThreshold: 1000, hotTtlSeconds: 3600, hotMaxBytes: 1024 * 1024, channel: localHotChannel() },
    });
    cleanups.push(() => store.close());
    state.loseAnswer = true;
    await expect(store.createVersion('doc', 'v1-old', { message: 'v1' })).rejects.toBeInstanceOf(ProviderUnavailableError);
    await store.createVersion('doc', 'v2-new', { message: 'v2' }); // acknowledged
    state.cutAfterBackupVersion = true;
    await store.repairBackups();
    expect(state.coldDown).toBe(true); // the repair did copy the older version, then cold went down
    await expect(readText(store, 'doc')).rejects.toBeInstanceOf(ProviderUnavailableError); // not v1-old from backup
  });
});

describe('leftovers of interrupted writes (session 10)', () => {
  it('are removed from every tier that keeps them, for the cleanup job', async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'kyozo-hybrid-leftovers-'));
    const config = loadConfig({ REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: prefix, STORAGE_ROOT_DIR: root, STORES: 'media:hybrid', HYBRID_COLD: 'disk', DISK_FSYNC: 'false' });
    const store = (await createProvider(storeConfig(config, { name: 'media', kind: 'hybrid' }), { redis, config })) as HybridProvider;
    cleanups.push(async () => {
      await store.close();
      await rm(root, { recursive: true, force: true });
    });
    await store.write('doc', 'x');
    const dayAgo = new Date(Date.now() - 24 * 3600 * 1000);
    for (const tier of ['media--cold', 'media--backup']) {
      const leftover = path.join(root, tier, 'objects', '.tmp-0123456789abcdef');
      await writeFile(leftover, 'half a write');
      await utimes(leftover, dayAgo, dayAgo);
    }
    expect(await store.removeLeftovers(3_600_000)).toBe(2);
    expect(await readText(store, 'doc')).toMatchObject({ text: 'x' });
  });
});

describe('a hot tier that fails', () => {
  it('is not a full one: a ram hot tier filled to HOT_MAX_BYTES, as a cache is, leaves health ok', async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'kyozo-hybrid-hot-full-'));
    const keys = Array.from({ length: 8 }, (_, i) => `thumb-${i}`);
    const charged = ramWriteBytes(keys[0]!, 100, describeWrite({}));
    const config = loadConfig({
      ...{ REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: prefix, STORAGE_ROOT_DIR: root, STORES: 'media:hybrid' },
      ...{ HYBRID_COLD: 'disk', HYBRID_BACKUP: 'disk', DISK_FSYNC: 'false', HOT_MAX_BYTES: String(keys.length * charged) },
    });
    const store = (await createProvider(storeConfig(config, { name: 'media', kind: 'hybrid' }), { redis, config })) as HybridProvider;
    cleanups.push(async () => {
      await store.close();
      await rm(root, { recursive: true, force: true });
    });
    for (const key of keys) await store.write(key, Buffer.alloc(100, 1));
    expect(await store.applyTiering({ promote: keys, demote: [] })).toMatchObject({ promoted: keys.length });
    expect(store.hot.bytes).toBe(store.hot.maxBytes);
    expect((await store.health()).status).toBe('ok');
  });

  it('costs speed only: its copies are read from cold, health says degraded, and the key is promoted again later', async () => {
    const { store, switches } = await hybrid();
    await store.write('doc', 'the content');
    await store.applyTiering({ promote: ['doc'], demote: [] });
    expect(await readText(store, 'doc')).toEqual({ text: 'the content', tier: 'hot' });

    switches.hotDown = true;
    expect(await readText(store, 'doc')).toEqual({ text: 'the content', tier: 'cold' });
    expect(await readText(store, 'doc')).toEqual({ text: 'the content', tier: 'cold' });
    const health = await store.health();
    expect(health.status).toBe('degraded');
    expect(health.detail).toContain('reads served from cold');

    switches.hotDown = false;
    expect((await store.health()).status).toBe('ok');
    await store.applyTiering({ promote: ['doc'], demote: [] });
    expect(await readText(store, 'doc')).toEqual({ text: 'the content', tier: 'hot' });
  });
});
