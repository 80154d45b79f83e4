/**
 * A hybrid mutation's follow-up steps — the backup copy and the invalidation of other processes' hot copies — are
 * tried again by the provider itself: a retry of the job would find cold already changed and never redo them. What
 * they leave behind, the repair pass brings in line, and reads during a cold outage answer accordingly.
 * RAM tiers and an in-memory invalidation bus, so that each step can be made to fail a given number of times.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { NotFoundError, ProviderUnavailableError } from '../../src/providers/errors.js';
import { createHybridProvider, type HybridProvider } from '../../src/providers/hybrid.js';
import type { HotChannel, HotMessage } from '../../src/providers/hybrid-invalidation.js';
import { RamProvider } from '../../src/providers/ram.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { closeRedis, type RedisConnection } from '../../src/redis.js';
import { interceptMethod } from '../support/intercept.js';
import { connectRedis, deleteKeys, uniquePrefix } from '../support/redis.js';

/** Pub/sub between the hybrid stores of one test, as Redis would carry it between processes. */
class Bus {
  private readonly listeners = new Set<(message: HotMessage) => void>();
  failPublishes = 0;

  channel(): HotChannel {
    let own: ((message: HotMessage) => void) | undefined;
    return {
      live: true,
      publish: async (message) => {
        if (this.failPublishes > 0) {
          this.failPublishes--;
          throw new Error('connection reset');
        }
        for (const listener of this.listeners) if (listener !== own) listener(message);
      },
      subscribe: async (listener) => {
        own = listener;
        this.listeners.add(listener);
        return async () => void this.listeners.delete(listener);
      },
    };
  }
}

async function text(provider: StorageProvider, key: string): Promise<{ text: string; tier?: string }> {
  const { info, body } = await provider.read(key);
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk as Buffer);
  return { text: Buffer.concat(chunks).toString('utf8'), tier: (info as { tier?: string }).tier };
}

let redis: RedisConnection;
const prefix = uniquePrefix('hybrid-follow-up');
const opened: HybridProvider[] = [];

beforeAll(async () => {
  redis = await connectRedis('worker');
});
afterEach(async () => {
  await Promise.all(opened.splice(0).map((store) => store.close()));
  await deleteKeys(redis, prefix); // the pending ledger is per store name, shared by this file's tests
});
afterAll(async () => {
  await deleteKeys(redis, prefix);
  await closeRedis(redis);
});

/** A cold and a backup tier in RAM, shared by the hybrid stores (processes) a test opens, and their pub/sub. */
function ramTiers(): { cold: RamProvider; backup: RamProvider; bus: Bus } {
  return { cold: new RamProvider({ maxBytes: 1024 * 1024 }), backup: new RamProvider({ maxBytes: 1024 * 1024 }), bus: new Bus() };
}

async function hybrid(parts: { cold: StorageProvider; backup: StorageProvider; bus: Bus; now?: () => number }): Promise<HybridProvider> {
  const store = await createHybridProvider({
    name: 'follow-up',
    hot: new RamProvider({ maxBytes: 1024 * 1024 }),
    cold: parts.cold,
    backup: parts.backup,
    redis,
    keyPrefix: prefix,
    accessThreshold: 1,
    hotTtlSeconds: 3600,
    hotMaxBytes: 1024 * 1024,
    channel: parts.bus.channel(),
    now: parts.now,
  });
  opened.push(store);
  return store;
}

/** `provider` whose `method` fails with an I/O error while `failures.left` is above zero. */
function failing(provider: StorageProvider, method: 'write' | 'createVersion' | 'delete', failures: { left: number }): StorageProvider {
  return interceptMethod(provider, method, (original) => {
    const call = original as (...args: unknown[]) => Promise<unknown>;
    return (async (...args: unknown[]) => {
      if (failures.left-- > 0) throw new Error('EIO');
      return call(...args);
    }) as typeof original;
  });
}

describe('hybrid follow-up steps after cold took a mutation', () => {
  it('a backup write that fails twice is tried again: the write succeeds and backup holds it', async () => {
    const backup = new RamProvider({ maxBytes: 1024 * 1024 });
    const failures = { left: 0 };
    const store = await hybrid({ cold: new RamProvider({ maxBytes: 1024 * 1024 }), backup: failing(backup, 'write', failures), bus: new Bus() });
    const first = await store.write('doc', 'v1');
    failures.left = 2;
    const second = await store.write('doc', 'v2', { ifMatch: first.etag });
    expect(failures.left).toBe(-1); // two failures and the attempt that went through
    expect((await text(backup, 'doc')).text).toBe('v2');
    expect((await backup.stat('doc')).etag).toBe(second.etag);
  });

  it('a backup that keeps failing fails the mutation as unavailable, after its retries', async () => {
    const failures = { left: 0 };
    const store = await hybrid({
      cold: new RamProvider({ maxBytes: 1024 * 1024 }),
      backup: failing(new RamProvider({ maxBytes: 1024 * 1024 }), 'write', failures),
      bus: new Bus(),
    });
    failures.left = 100;
    await expect(store.write('doc', 'v1')).rejects.toBeInstanceOf(ProviderUnavailableError);
    expect(failures.left).toBe(96); // the first attempt and three retries
  });

  it('an invalidation that fails to publish twice is sent again: another process drops its stale hot copy', async () => {
    const bus = new Bus();
    const shared = { cold: new RamProvider({ maxBytes: 1024 * 1024 }), backup: new RamProvider({ maxBytes: 1024 * 1024 }), bus };
    const [writer, reader] = [await hybrid(shared), await hybrid(shared)];
    const first = await writer.write('page', 'old');
    await text(reader, 'page');
    expect(await text(reader, 'page')).toEqual({ text: 'old', tier: 'hot' });

    bus.failPublishes = 2;
    await writer.write('page', 'new', { ifMatch: first.etag });
    expect(bus.failPublishes).toBe(0);
    expect(await text(reader, 'page')).toEqual({ text: 'new', tier: 'cold' });
  });
});

/** `provider` whose writes wait for `gate` (each one, until it is opened). */
function gatedWrites(provider: StorageProvider, gate: Promise<void>): StorageProvider {
  return interceptMethod(provider, 'write', (write) => async (...args) => {
    await gate;
    return write(...args);
  });
}

async function readVersion(provider: StorageProvider, key: string, versionId: string): Promise<string> {
  const { body } = await provider.read(key, { versionId });
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Holds the first call made after `arm()` once it is done, until `release()`; `reached` resolves then. */
class Pause {
  readonly reached: Promise<void>;
  readonly release: () => void;
  private armed = false;
  private arrive!: () => void;
  private readonly released: Promise<void>;

  constructor() {
    let release!: () => void;
    this.released = new Promise<void>((resolve) => (release = resolve));
    this.release = release;
    this.reached = new Promise<void>((resolve) => (this.arrive = resolve));
  }

  arm(): void {
    this.armed = true;
  }

  async pass(): Promise<void> {
    if (!this.armed) return;
    this.armed = false;
    this.arrive();
    await this.released;
  }
}

/** `provider` whose `method` answers, once `pause` is armed, only when it is released. */
function pausedAfter(provider: StorageProvider, method: 'read' | 'stat', pause: Pause): StorageProvider {
  return interceptMethod(provider, method, (original) => {
    const call = original as (...args: unknown[]) => Promise<unknown>;
    return (async (...args: unknown[]) => {
      const answer = await call(...args);
      await pause.pass();
      return answer;
    }) as typeof original;
  });
}

async function until(condition: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200 && !(await condition()); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  expect(await condition()).toBe(true);
}

describe('the backup repair pass', () => {
  it('leaves nothing to repair after mutations that went through', async () => {
    const store = await hybrid({ cold: new RamProvider({ maxBytes: 1024 * 1024 }), backup: new RamProvider({ maxBytes: 1024 * 1024 }), bus: new Bus() });
    await store.write('a', 'one');
    await store.createVersion('a', 'two', { message: 'two' });
    await store.delete('a');
    await expect(store.write('b', 'x', { ifMatch: '0'.repeat(64) })).rejects.toThrow(); // refused by cold: nothing changed
    expect(await store.repairBackups()).toEqual({ repaired: 0, pending: 0 });
  });

  it('copies cold into a backup whose copy failed for good, once, and then forgets the key', async () => {
    const backup = new RamProvider({ maxBytes: 1024 * 1024 });
    const failures = { left: 0 };
    const store = await hybrid({ cold: new RamProvider({ maxBytes: 1024 * 1024 }), backup: failing(backup, 'write', failures), bus: new Bus() });
    await store.write('doc', 'v1', { contentType: 'text/plain', metadata: { lang: 'en' } });
    failures.left = 100;
    await expect(store.write('doc', 'v2', { contentType: 'text/markdown', metadata: { lang: 'de' } })).rejects.toBeInstanceOf(ProviderUnavailableError);
    expect((await text(backup, 'doc')).text).toBe('v1');

    expect(await store.repairBackups()).toEqual({ repaired: 0, pending: 1 }); // the backup still fails
    failures.left = 0;
    expect(await store.repairBackups()).toEqual({ repaired: 1, pending: 0 });
    expect((await text(backup, 'doc')).text).toBe('v2');
    expect(await backup.stat('doc')).toMatchObject({ contentType: 'text/markdown', metadata: { lang: 'de' } });
    expect(await store.repairBackups()).toEqual({ repaired: 0, pending: 0 });
  });

  it('removes from backup an object whose delete reached only cold', async () => {
    const backup = new RamProvider({ maxBytes: 1024 * 1024 });
    const failures = { left: 0 };
    const store = await hybrid({
      cold: new RamProvider({ maxBytes: 1024 * 1024 }),
      backup: failing(backup, 'delete', failures),
      bus: new Bus(),
    });
    await store.write('gone', 'x');
    failures.left = 100;
    await expect(store.delete('gone')).rejects.toBeInstanceOf(ProviderUnavailableError);
    failures.left = 0;
    expect(await store.repairBackups()).toEqual({ repaired: 1, pending: 0 });
    await expect(backup.stat('gone')).rejects.toThrow(/not found|no object|does not exist/i);
  });

  it('takes a mutation whose process died (it never ends) as abandoned after the grace period, not before', async () => {
    const { cold, backup, bus } = ramTiers();
    const dying = await hybrid({ cold, backup: gatedWrites(backup, new Promise(() => {})), bus });
    void dying.write('doc', 'cold only'); // cold takes it, the backup copy never happens
    await until(async () => (await cold.stat('doc').then(() => true, () => false)));

    const survivor = await hybrid({ cold, backup, bus });
    expect(await survivor.repairBackups()).toEqual({ repaired: 0, pending: 1 });
    expect(await survivor.repairBackups({ abandonedAfterMs: 0 })).toEqual({ repaired: 1, pending: 0 });
    expect((await text(backup, 'doc')).text).toBe('cold only');
  });

  it('brings backup to cold\'s latest when two processes landed their backup copies in the opposite order', async () => {
    const { cold, backup, bus } = ramTiers();
    let open!: () => void;
    const slow = await hybrid({ cold, backup: gatedWrites(backup, new Promise<void>((resolve) => (open = resolve))), bus });
    const fast = await hybrid({ cold, backup, bus });

    const first = slow.write('doc', 'first');
    await until(async () => (await cold.stat('doc').then(() => true, () => false)));
    await fast.write('doc', 'second');
    open();
    await first;
    expect((await text(backup, 'doc')).text).toBe('first'); // backup now lags cold: the race this pass repairs
    expect((await text(cold, 'doc')).text).toBe('second');

    expect(await fast.repairBackups()).toEqual({ repaired: 1, pending: 0 });
    expect((await text(backup, 'doc')).text).toBe('second');
  });

  it('a mutation whose entry a repair took for abandoned while it ran puts its key back when it ends', async () => {
    const { cold, backup, bus } = ramTiers();
    let releaseCold!: () => void;
    const coldHeld = new Promise<void>((resolve) => (releaseCold = resolve));
    const failures = { left: 0 };
    const slow = await hybrid({ cold: gatedWrites(cold, coldHeld), backup: failing(backup, 'write', failures), bus });
    const repairer = await hybrid({ cold, backup, bus, now: () => Date.now() + 11 * 60_000 }); // its clock: 11 min on
    const mutation = slow.write('doc', 'new').catch((error: unknown) => error);
    await until(async () => (await redis.hlen(`${prefix}:hybrid:follow-up:pending`)) > 0); // the mutation has begun
    expect(await repairer.repairBackups()).toEqual({ repaired: 1, pending: 0 }); // cold and backup agree: nothing yet
    failures.left = 100;
    releaseCold();
    expect(await mutation).toBeInstanceOf(ProviderUnavailableError); // its backup copy failed for good
    expect(await backup.stat('doc').then(() => 'present', () => 'absent')).toBe('absent');
    failures.left = 0;
    expect(await repairer.repairBackups()).toEqual({ repaired: 1, pending: 0 });
    expect((await text(backup, 'doc')).text).toBe('new');
  });

  it('leaves pending, not overwritten, a backup copy that another process landed after the repair read cold', async () => {
    const { cold, backup, bus } = ramTiers();
    const failures = { left: 0 };
    const pause = new Pause();
    const repairer = await hybrid({ cold: pausedAfter(cold, 'read', pause), backup: failing(backup, 'write', failures), bus });
    const writer = await hybrid({ cold, backup, bus });
    await writer.write('doc', 'v1');
    failures.left = 100;
    await expect(repairer.write('doc', 'v2')).rejects.toBeInstanceOf(ProviderUnavailableError);
    failures.left = 0;

    pause.arm();
    const repairing = repairer.repairBackups();
    await pause.reached; // the repair has read v2 from cold
    await writer.write('doc', 'v3');
    pause.release();
    expect(await repairing).toEqual({ repaired: 0, pending: 1 });
    expect((await text(backup, 'doc')).text).toBe('v3');
    expect(await repairer.repairBackups()).toEqual({ repaired: 1, pending: 0 });
    expect((await text(backup, 'doc')).text).toBe('v3');
  });

  it('leaves in backup, with its version map, a key that another process created after the repair saw cold without it', async () => {
    const { cold, backup, bus } = ramTiers();
    const failures = { left: 0 };
    const pause = new Pause();
    const repairer = await hybrid({ cold, backup: pausedAfter(failing(backup, 'delete', failures), 'stat', pause), bus });
    const creator = await hybrid({ cold, backup, bus });
    await creator.write('gone', 'old');
    failures.left = 100;
    await expect(repairer.delete('gone')).rejects.toBeInstanceOf(ProviderUnavailableError);
    failures.left = 0;

    pause.arm();
    const repairing = repairer.repairBackups();
    await pause.reached; // the repair has seen no "gone" in cold and "old" in backup
    const version = await creator.createVersion('gone', 'new', { message: 'recreated' });
    pause.release();
    expect(await repairing).toEqual({ repaired: 0, pending: 1 });
    expect((await text(backup, 'gone')).text).toBe('new');
    const inBackup = await redis.hget(`${prefix}:hybrid:follow-up:versions:gone`, `c:${version.versionId}`);
    expect(await readVersion(backup, 'gone', inBackup!)).toBe('new');
    expect(await repairer.repairBackups()).toEqual({ repaired: 1, pending: 0 });
  });

  it('does not take a mutation for abandoned because its key was pending long before it began', async () => {
    const { cold, backup, bus } = ramTiers();
    let clock = Date.now();
    const now = () => clock;
    const failures = { left: 100 };
    const failed = await hybrid({ cold, backup: failing(backup, 'write', failures), bus, now });
    await expect(failed.write('doc', 'old')).rejects.toBeInstanceOf(ProviderUnavailableError); // pending from now on
    clock += 11 * 60_000;

    let releaseCold!: () => void;
    const slow = await hybrid({ cold: gatedWrites(cold, new Promise<void>((resolve) => (releaseCold = resolve))), backup, bus, now });
    const mutation = slow.write('doc', 'new');
    await until(async () => (await redis.hget(`${prefix}:hybrid:follow-up:pending`, 'c:doc')) === '1'); // it has begun
    const repairer = await hybrid({ cold, backup, bus, now });
    expect(await repairer.repairBackups()).toEqual({ repaired: 0, pending: 1 }); // running for no time at all
    releaseCold();
    await mutation;
    expect(await repairer.repairBackups()).toEqual({ repaired: 1, pending: 0 });
    expect((await text(backup, 'doc')).text).toBe('new');
  });

  it('copies the versions whose backup copy failed, and drops the version map with a delete of all versions', async () => {
    const backup = new RamProvider({ maxBytes: 1024 * 1024 });
    const failures = { left: 0 };
    const store = await hybrid({
      cold: new RamProvider({ maxBytes: 1024 * 1024 }),
      backup: failing(backup, 'createVersion', failures),
      bus: new Bus(),
    });
    await store.createVersion('doc', 'one', { message: 'one' });
    failures.left = 100;
    await expect(store.createVersion('doc', 'two', { message: 'two' })).rejects.toBeInstanceOf(ProviderUnavailableError);
    failures.left = 0;
    await store.createVersion('doc', 'three', { message: 'three' }); // current objects agree again, version two is missing
    expect((await backup.listVersions('doc')).items.map((version) => version.message)).toEqual(['three', 'one']);

    expect(await store.repairBackups()).toEqual({ repaired: 1, pending: 0 });
    expect((await backup.listVersions('doc')).items.map((version) => version.message)).toEqual(['two', 'three', 'one']);
    const two = (await store.listVersions('doc')).items.find((version) => version.message === 'two')!;
    const twoInBackup = await redis.hget(`${prefix}:hybrid:follow-up:versions:doc`, `c:${two.versionId}`);
    expect((await text(backup, 'doc')).text).toBe('three');
    expect(await readVersion(backup, 'doc', twoInBackup!)).toBe('two');

    failures.left = 0;
    const deleteFailures = { left: 100 };
    const deleting = await hybrid({
      cold: (store as unknown as { cold: StorageProvider }).cold,
      backup: failing(backup, 'delete', deleteFailures),
      bus: new Bus(),
    });
    await expect(deleting.delete('doc', { allVersions: true })).rejects.toBeInstanceOf(ProviderUnavailableError);
    deleteFailures.left = 0;
    expect(await deleting.repairBackups()).toEqual({ repaired: 1, pending: 0 });
    expect((await backup.listVersions('doc')).items).toEqual([]);
    expect(await redis.exists(`${prefix}:hybrid:follow-up:versions:doc`)).toBe(0);
  });

  it('links a backup version whose map entry was lost instead of copying it a second time', async () => {
    const backup = new RamProvider({ maxBytes: 1024 * 1024 });
    const failures = { left: 0 };
    const store = await hybrid({
      cold: new RamProvider({ maxBytes: 1024 * 1024 }),
      backup: failing(backup, 'createVersion', failures),
      bus: new Bus(),
    });
    const one = await store.createVersion('doc', 'one', { message: 'one' });
    const mapKey = `${prefix}:hybrid:follow-up:versions:doc`;
    await redis.del(mapKey); // the link of version one is lost
    failures.left = 100;
    await expect(store.createVersion('doc', 'two', { message: 'two' })).rejects.toBeInstanceOf(ProviderUnavailableError);
    failures.left = 0;

    expect(await store.repairBackups()).toEqual({ repaired: 1, pending: 0 });
    expect((await backup.listVersions('doc')).items.map((version) => version.message)).toEqual(['two', 'one']);
    expect(await redis.hget(mapKey, `c:${one.versionId}`)).not.toBeNull();
  });
});

/** A cold tier that is down: every call fails as unavailable. */
function down(provider: StorageProvider): StorageProvider {
  return new Proxy(provider, {
    get(target, property) {
      const value = Reflect.get(target, property, target) as unknown;
      if (typeof value !== 'function' || property === 'close') return value;
      return async () => {
        throw new ProviderUnavailableError('cold is down');
      };
    },
  });
}

describe('during a cold outage', () => {
  it('a stat answered by backup says so, as a read does', async () => {
    const { cold, backup, bus } = ramTiers();
    const store = await hybrid({ cold, backup, bus });
    await store.write('doc', 'content');
    expect(await store.stat('doc')).toMatchObject({ tier: 'cold' });
    const degraded = await hybrid({ cold: down(cold), backup, bus });
    expect(await degraded.stat('doc')).toMatchObject({ tier: 'backup' });
  });

  it('a key that backup lacks while the repair ledger holds it is unavailable, not missing', async () => {
    const { cold, backup, bus } = ramTiers();
    const failures = { left: 100 };
    const store = await hybrid({ cold, backup: failing(backup, 'write', failures), bus });
    await expect(store.write('new', 'only in cold')).rejects.toBeInstanceOf(ProviderUnavailableError);

    const degraded = await hybrid({ cold: down(cold), backup, bus });
    await expect(degraded.read('new')).rejects.toBeInstanceOf(ProviderUnavailableError);
    await expect(degraded.stat('new')).rejects.toBeInstanceOf(ProviderUnavailableError);
    await expect(degraded.read('never-written')).rejects.toBeInstanceOf(NotFoundError);
  });
});
