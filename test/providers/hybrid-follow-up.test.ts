/**
 * A hybrid mutation's follow-up steps — the backup copy and the invalidation of other processes' hot copies — are
 * tried again by the provider itself: a retry of the job would find cold already changed and never redo them.
 * RAM tiers and an in-memory invalidation bus, so that each step can be made to fail a given number of times.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ProviderUnavailableError } from '../../src/providers/errors.js';
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
});
afterAll(async () => {
  await deleteKeys(redis, prefix);
  await closeRedis(redis);
});

async function hybrid(parts: { cold: StorageProvider; backup: StorageProvider; bus: Bus }): Promise<HybridProvider> {
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
  });
  opened.push(store);
  return store;
}

/** `provider` whose writes fail with an I/O error while `failures.left` is above zero. */
function flakyWrites(provider: StorageProvider, failures: { left: number }): StorageProvider {
  return interceptMethod(provider, 'write', (write) => async (...args) => {
    if (failures.left-- > 0) throw new Error('EIO');
    return write(...args);
  });
}

describe('hybrid follow-up steps after cold took a mutation', () => {
  it('a backup write that fails twice is tried again: the write succeeds and backup holds it', async () => {
    const backup = new RamProvider({ maxBytes: 1024 * 1024 });
    const failures = { left: 0 };
    const store = await hybrid({ cold: new RamProvider({ maxBytes: 1024 * 1024 }), backup: flakyWrites(backup, failures), bus: new Bus() });
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
      backup: flakyWrites(new RamProvider({ maxBytes: 1024 * 1024 }), failures),
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
