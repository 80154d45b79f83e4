/** Connections to a Redis that is down: their errors are logged once, by the connection's owner, never printed raw. */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { freePort } from '../src/embedded-redis.js';
import { createQueues } from '../src/jobs/queue.js';
import { closeRedis, createRedis, hsetIfExists, whenReady } from '../src/redis.js';
import { testRedisConfig, uniquePrefix } from './support/redis.js';

afterEach(() => {
  vi.restoreAllMocks();
});

describe('a Redis that does not answer', () => {
  it('makes the job queues print nothing of their own (BullMQ prints an error nobody listens to)', async () => {
    const printed: unknown[] = [];
    vi.spyOn(console, 'error').mockImplementation((...args: unknown[]) => void printed.push(args));
    const connection = createRedis({ redis: { url: `redis://127.0.0.1:${await freePort()}`, explicit: true } }, 'producer');
    const logged: Error[] = [];
    connection.on('error', (error: Error) => logged.push(error));
    const queues = createQueues({ connection, prefix: '{kyozo-test-down}', attempts: 1 });
    try {
      queues.all(); // every queue made, listening on the connection
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      expect(logged.length).toBeGreaterThan(0); // the owner hears of it
      expect(printed).toEqual([]);
    } finally {
      await queues.close();
      await closeRedis(connection);
    }
  });
});

describe('hsetIfExists', () => {
  it('sets a field of a hash that exists, a new one or one it replaces, and never makes a hash that does not', async () => {
    const redis = createRedis(testRedisConfig, 'producer');
    await whenReady(redis);
    const key = `${uniquePrefix('hset-if-exists')}:job`;
    try {
      expect(await hsetIfExists(redis, key, 'field', 'a')).toBe(false);
      expect(await redis.exists(key)).toBe(0); // a removed job's hash does not come back as a stray key
      await redis.hset(key, 'data', '{}');
      expect(await hsetIfExists(redis, key, 'field', 'a')).toBe(true);
      expect(await hsetIfExists(redis, key, 'field', 'b')).toBe(true); // replacing counts as set too
      expect(await redis.hget(key, 'field')).toBe('b');
    } finally {
      await redis.del(key);
      await closeRedis(redis);
    }
  });
});
