/**
 * Real Redis for tests (DESIGN §9): `REDIS_URL`, else 127.0.0.1:6379. Every test file takes its own hash-tagged
 * prefix, so files running side by side (and on a Cluster) never see each other's keys, and removes its keys at
 * the end.
 */
import { randomBytes } from 'node:crypto';
import { closeRedis, createRedis, whenReady, type RedisConnection, type RedisRole } from '../../src/redis.js';

export const TEST_REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

export const testRedisConfig = { redis: { url: TEST_REDIS_URL, explicit: true } };

/** `{t-<label>-<random>}`: unique per call, one Cluster slot. */
export function uniquePrefix(label: string): string {
  return `{t-${label.replace(/[^a-zA-Z0-9_-]/g, '_')}-${randomBytes(4).toString('hex')}}`;
}

export async function connectRedis(role: RedisRole = 'producer'): Promise<RedisConnection> {
  const connection = createRedis(testRedisConfig, role, { connectionName: `kyozo-test-${role}` });
  await whenReady(connection);
  return connection;
}

function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, (match) => `\\${match}`);
}

/** Deletes every key under `prefix` (SCAN, not KEYS: other suites share this Redis). */
export async function deleteKeys(connection: RedisConnection, prefix: string): Promise<number> {
  let removed = 0;
  let cursor = '0';
  do {
    const [next, keys] = await (connection as import('ioredis').Redis).scan(cursor, 'MATCH', `${escapeGlob(prefix)}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) removed += await (connection as import('ioredis').Redis).unlink(...keys);
  } while (cursor !== '0');
  return removed;
}

export interface RedisFixture {
  prefix: string;
  /** Fails fast, like the API's. */
  producer: RedisConnection;
  /** `maxRetriesPerRequest: null`, like a worker's. */
  worker: RedisConnection;
  /** Removes the prefix's keys and closes both connections. */
  cleanup(): Promise<void>;
}

export async function redisFixture(label: string): Promise<RedisFixture> {
  const prefix = uniquePrefix(label);
  const producer = await connectRedis('producer');
  const worker = await connectRedis('worker');
  return {
    prefix,
    producer,
    worker,
    async cleanup() {
      await deleteKeys(producer, prefix).catch(() => undefined);
      await Promise.all([closeRedis(producer), closeRedis(worker)]);
    },
  };
}
