import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { createEventBus, streamIdAfter, type EventBus, type EventEnvelope } from '../../src/events/bus.js';
import { closeRedis, createRedis, whenReady } from '../../src/redis.js';
import { redisFixture, testRedisConfig, type RedisFixture } from '../support/redis.js';
import { quietLog, waitFor } from './fixtures/pipeline.js';

describe('events bus', () => {
  let redis: RedisFixture;
  let bus: EventBus;

  beforeAll(async () => {
    redis = await redisFixture('bus');
    bus = createEventBus({ redis: redis.producer, prefix: redis.prefix, maxLen: 50, log: quietLog });
  });

  afterAll(async () => {
    await bus?.close();
    await redis?.cleanup();
  });

  it('delivers an emitted event live with the id it has in the stream', async () => {
    const received: EventEnvelope[] = [];
    const unsubscribe = await bus.subscribe(['object.written'], (event) => received.push(event));
    const emitted = await bus.emit({ type: 'object.written', store: 's', key: 'k', jobId: 'j1', data: { etag: 'e' } });
    await bus.emit({ type: 'object.deleted', store: 's', key: 'k', data: {} });
    const live = await waitFor(() => received.find((event) => event.jobId === 'j1'));
    expect(live).toEqual(emitted);
    expect(received.every((event) => event.type === 'object.written')).toBe(true);
    await unsubscribe();
  });

  it('takes one type as well as a list (DESIGN §7: subscribe(type, fn))', async () => {
    const received: EventEnvelope[] = [];
    const unsubscribe = await bus.subscribe('object.deleted', (event) => received.push(event));
    await bus.emit({ type: 'object.written', store: 's', key: 'one', jobId: 'written-1', data: {} });
    await bus.emit({ type: 'objects.deleted', store: 's', jobId: 'prefix-1', data: {} });
    const deleted = await bus.emit({ type: 'object.deleted', store: 's', key: 'one', jobId: 'deleted-1', data: {} });
    expect(await waitFor(() => received.find((event) => event.jobId === 'deleted-1'))).toEqual(deleted);
    // Only this test's events (an earlier test's may still arrive); published in order, the others came first if at all.
    const ours = received.filter((event) => ['written-1', 'prefix-1', 'deleted-1'].includes(event.jobId ?? ''));
    expect(ours.map((event) => event.type)).toEqual(['object.deleted']);
    await unsubscribe();
  });

  it('leaves out what else is published on its channel (not event arrays) and goes on delivering', async () => {
    const received: EventEnvelope[] = [];
    const unsubscribe = await bus.subscribe(['object.written'], (event) => received.push(event));
    const uncaught: unknown[] = [];
    const onUncaught = (error: unknown) => uncaught.push(error);
    process.on('uncaughtException', onUncaught);
    try {
      for (const message of ['5', 'null', '{"id":"1-0"}', '[{"nope":1}]', '[null]']) await redis.producer.publish(`${redis.prefix}:events:live`, message);
      const emitted = await bus.emit({ type: 'object.written', store: 's', key: 'k', jobId: 'after-noise', data: {} });
      expect(await waitFor(() => received.find((event) => event.jobId === 'after-noise'))).toEqual(emitted);
      expect(uncaught).toEqual([]);
    } finally {
      process.off('uncaughtException', onUncaught);
      await unsubscribe();
    }
  });

  it('reads the history after an id, filtered by type', async () => {
    const first = await bus.emit({ type: 'version.created', key: 'a', data: 1 });
    await bus.emit({ type: 'object.deleted', key: 'b', data: 2 });
    const third = await bus.emit({ type: 'version.created', key: 'c', data: 3 });
    const since = await bus.readSince(first!.id, ['version.created']);
    expect(since.map((event) => event.id)).toEqual([third!.id]);
    expect(since[0]).toEqual(third);
  });

  it('emits once per marker: a second emit with the same marker is skipped', async () => {
    const jobKey = `${redis.prefix}:objects:job-once`;
    await redis.producer.hset(jobKey, 'name', 'write');
    const once = { key: jobKey, field: 'kyozoEvent' };
    const first = await bus.emit({ type: 'object.written', jobId: 'job-once', data: {} }, { once });
    const second = await bus.emit({ type: 'object.written', jobId: 'job-once', data: {} }, { once });
    expect(first).toBeDefined();
    expect(second).toBeUndefined();
    expect(await redis.producer.hget(jobKey, 'kyozoEvent')).toBe(first!.id);
    const history = await bus.readSince(undefined, '*', 10_000);
    expect(history.filter((event) => event.jobId === 'job-once')).toHaveLength(1);
  });

  it('sets the marker\'s extra fields with it, as given, in a batch whose events carry none, one or several', async () => {
    const key = (name: string) => `${redis.prefix}:objects:job-${name}`;
    for (const name of ['none', 'empty', 'two']) await redis.worker.hset(key(name), 'data', '{"body":"x"}');
    const received: EventEnvelope[] = [];
    const unsubscribe = await bus.subscribe(['object.written'], (event) => received.push(event));
    const odd = 'a value with "quotes", \\ and \u00e9\n';
    const emitted = await Promise.all([
      bus.emit({ type: 'object.written', key: 'none', data: {} }, { once: { key: key('none'), field: 'kyozoEvent' } }),
      bus.emit({ type: 'object.written', key: 'empty', data: {} }, { once: { key: key('empty'), field: 'kyozoEvent', alsoSet: {} } }),
      bus.emit({ type: 'object.written', key: 'plain', data: {} }),
      bus.emit({ type: 'object.written', key: 'two', data: {} }, { once: { key: key('two'), field: 'kyozoEvent', alsoSet: { data: '{}', note: odd } } }),
    ]);
    expect(emitted.every((event) => event !== undefined)).toBe(true);
    expect(await redis.worker.hgetall(key('none'))).toEqual({ data: '{"body":"x"}', kyozoEvent: emitted[0]!.id });
    expect(await redis.worker.hgetall(key('empty'))).toEqual({ data: '{"body":"x"}', kyozoEvent: emitted[1]!.id });
    expect(await redis.worker.hgetall(key('two'))).toEqual({ data: '{}', note: odd, kyozoEvent: emitted[3]!.id });
    await waitFor(() => received.length >= 4);
    expect(received.map((event) => event.key)).toEqual(['none', 'empty', 'plain', 'two']);
    await unsubscribe();
  });

  it('an event of a batch that Redis refuses fails alone: the others are appended, published and resolved (session 11)', async () => {
    const received: EventEnvelope[] = [];
    const unsubscribe = await bus.subscribe('*', (event) => received.push(event));
    const notAHash = `${redis.prefix}:objects:not-a-hash`;
    await redis.producer.set(notAHash, 'x');
    // One turn of the event loop: one script call for the three.
    const [before, refused, after] = await Promise.allSettled([
      bus.emit({ type: 'object.written', jobId: 'batch-before', data: {} }),
      bus.emit({ type: 'object.written', jobId: 'batch-refused', data: {} }, { once: { key: notAHash, field: 'kyozoEvent' } }),
      bus.emit({ type: 'object.written', jobId: 'batch-after', data: {} }),
    ]);
    expect(before.status).toBe('fulfilled');
    expect(after.status).toBe('fulfilled');
    expect(refused.status).toBe('rejected');
    expect(String((refused as PromiseRejectedResult).reason)).toMatch(/WRONGTYPE/);
    await waitFor(() => received.some((event) => event.jobId === 'batch-after'));
    expect(received.map((event) => event.jobId).filter((id) => id?.startsWith('batch-'))).toEqual(['batch-before', 'batch-after']);
    const history = (await bus.readSince(undefined, '*', 10_000)).filter((event) => event.jobId?.startsWith('batch-'));
    expect(history.map((event) => event.jobId)).toEqual(['batch-before', 'batch-after']);
    await unsubscribe();
  });

  it('caps the stream near EVENTS_MAXLEN', async () => {
    for (let i = 0; i < 20; i++) await Promise.all(Array.from({ length: 50 }, (_, j) => bus.emit({ type: 'object.deleted', key: `k${i}-${j}`, data: {} })));
    const length = await (redis.producer as Redis).xlen(bus.streamKey);
    expect(length).toBeLessThan(1000);
  });

  it('stops delivering to an unsubscribed listener', async () => {
    const received: EventEnvelope[] = [];
    const unsubscribe = await bus.subscribe('*', (event) => received.push(event));
    const witness: EventEnvelope[] = [];
    await bus.subscribe('*', (event) => witness.push(event));
    await unsubscribe();
    const emitted = await bus.emit({ type: 'object.deleted', key: 'after', data: {} });
    await waitFor(() => witness.find((event) => event.id === emitted!.id));
    expect(received).toHaveLength(0);
  });

  it('after its subscriber connection reconnects, delivers the events published meanwhile: in order, once', async () => {
    // A connection name of its own, so that the test drops this bus's subscriber and no other.
    const name = `kyozo-test-bus-${randomBytes(4).toString('hex')}`;
    const connection = createRedis(testRedisConfig, 'producer', { connectionName: name });
    await whenReady(connection);
    const own = createEventBus({ redis: connection, prefix: redis.prefix, maxLen: 1000, log: quietLog });
    const emit = async (key: string) => (await own.emit({ type: 'object.written', key, data: {} }))!;
    await emit('before');
    const received: EventEnvelope[] = [];
    await own.subscribe(['object.written'], (event) => received.push(event));
    const dropSubscriber = async () => {
      const clients = (await redis.worker.call('CLIENT', 'LIST', 'TYPE', 'pubsub')) as string;
      const line = clients.split('\n').find((client) => client.includes(` name=${name} `));
      await redis.worker.call('CLIENT', 'KILL', 'ID', /id=(\d+)/.exec(line!)![1]!);
    };
    const arrived = (event: EventEnvelope) => waitFor(() => received.some((r) => r.id === event.id), { timeoutMs: 10_000, what: event.key });
    try {
      // Dropped before it delivered anything: the catch-up must not bring the event from before the subscription.
      await dropSubscriber();
      await arrived(await emit('gap-1'));
      await arrived(await emit('live'));
      await dropSubscriber();
      await emit('gap-2');
      await arrived(await emit('gap-3'));
      await arrived(await emit('after'));
      expect(received.map((event) => event.key)).toEqual(['gap-1', 'live', 'gap-2', 'gap-3', 'after']);
    } finally {
      await own.close();
      await closeRedis(connection);
    }
  });
});

describe('streamIdAfter', () => {
  it('compares both parts numerically and exactly, past 2^53', () => {
    expect(streamIdAfter('10-0', '9-5')).toBe(true);
    expect(streamIdAfter('5-10', '5-9')).toBe(true);
    expect(streamIdAfter('5-9', '5-9')).toBe(false);
    expect(streamIdAfter('5-9007199254740993', '5-9007199254740992')).toBe(true); // equal as doubles
    expect(streamIdAfter('18446744073709551615-0', '18446744073709551614-18446744073709551615')).toBe(true);
    expect(streamIdAfter('007-1', '7-0')).toBe(true); // a client's id with leading zeros
    expect(streamIdAfter('7-0', '007-1')).toBe(false);
  });
});
