/** `?wait=true` underneath: JobWaiter hears of a job that finishes while its first wait is still setting up. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobWaiter } from '../../src/api/job-status.js';
import { createQueues } from '../../src/jobs/queue.js';
import { createRedis, whenReady } from '../../src/redis.js';
import { RamProvider } from '../../src/providers/ram.js';
import { inlineBody, startPipeline, type Pipeline } from '../jobs/fixtures/pipeline.js';
import { beforeEachWrite } from '../support/intercept.js';
import { testRedisConfig } from '../support/redis.js';
import { redisCli, redisServerUnavailableReason, startRedisServer } from '../cluster/redis-server.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Calls of a Redis command since the server started (`INFO commandstats`). */
async function callsOf(port: number, command: string): Promise<number> {
  const match = new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(await redisCli(port, 'INFO', 'commandstats'));
  return Number(match?.[1] ?? 0);
}

const ROUNDS = 40;
const WAIT_MS = 5_000;

describe('JobWaiter', () => {
  let p: Pipeline;

  beforeAll(async () => {
    // Writes finish 0-3 ms late, by round: some of them while the waiter's first read is still on its way to Redis.
    let round = 0;
    const store = beforeEachWrite(new RamProvider({ maxBytes: 1024 * 1024 }), () => new Promise((resolve) => setTimeout(resolve, round++ % 4)));
    p = await startPipeline('job-waiter', { stores: new Map([['main', store]]) });
    await p.startWorkers();
  });

  afterAll(async () => {
    await p?.close();
  });

  it('ends a wait at its timeout even when its listener cannot be set up (its Redis unreachable)', async () => {
    const unreachable = { ...testRedisConfig, redis: { ...testRedisConfig.redis, url: 'redis://127.0.0.1:1' } };
    const connect = () => createRedis(unreachable, 'worker').on('error', () => undefined);
    const waiter = new JobWaiter(p.queues, { connection: connect, prefix: p.prefix, redis: p.redis.producer });
    const paused = p.queues.queue('objects');
    await paused.pause(); // the job stays waiting: only the timeout can end the wait
    try {
      const { jobId } = await p.queues.enqueue('write', { store: 'main', key: 'waited/unreachable', body: inlineBody('x') });
      const started = Date.now();
      const status = await waiter.wait(jobId, 500);
      expect(status?.state).toBe('waiting');
      expect(Date.now() - started).toBeLessThan(3_000);
    } finally {
      await paused.resume();
      await waiter.close();
    }
  });

  it('survives Redis failing under a wait: the wait ends, nothing is left unhandled', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    const producer = createRedis(testRedisConfig, 'producer');
    await whenReady(producer);
    const queues = createQueues({ connection: producer, prefix: p.prefix, attempts: 1 });
    const waiter = new JobWaiter(queues, {
      prefix: p.prefix,
      redis: producer,
      connection: () => {
        const connection = createRedis(testRedisConfig, 'worker');
        const xrevrange = connection.xrevrange.bind(connection) as (...args: unknown[]) => Promise<unknown>;
        // A blip at the worst moment: the producer's connection drops as the listener is set up.
        (connection as unknown as { xrevrange: unknown }).xrevrange = async (...args: unknown[]) => {
          const reply = await xrevrange(...args);
          producer.disconnect(true);
          return reply;
        };
        return connection;
      },
    });
    try {
      await p.queues.queue('objects').pause();
      const { jobId } = await queues.enqueue('write', { store: 'main', key: 'waited/blip', body: inlineBody('x') });
      await waiter.wait(jobId, 1_000).catch(() => undefined); // a 503 at worst
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      await p.queues.queue('objects').resume();
      await waiter.close();
      await queues.close();
      producer.disconnect();
    }
  });

  it('answers the first wait of a new waiter when the job finishes, not when the wait times out', async () => {
    for (let round = 0; round < ROUNDS; round++) {
      // A new waiter each round: its events connection is opened by this first wait, while the worker runs the job.
      const waiter = new JobWaiter(p.queues, { connection: () => createRedis(testRedisConfig, 'worker'), prefix: p.prefix, redis: p.redis.producer });
      try {
        const { jobId } = await p.queues.enqueue('write', { store: 'main', key: `waited/${round}`, body: inlineBody(`round ${round}`) });
        const started = Date.now();
        const status = await waiter.wait(jobId, WAIT_MS);
        expect(status?.state).toBe('completed');
        // A wait that missed the completion returns the same status, but only after sitting out WAIT_MS.
        expect(Date.now() - started, `round ${round}`).toBeLessThan(WAIT_MS / 2);
      } finally {
        await waiter.close();
      }
    }
  });

  it('answers when the job finished though its completion left the capped events stream before the listener read it', async () => {
    // Under thousands of jobs a second BullMQ's events stream (capped) can move past a listener that fell behind. Here
    // the job completes and its event is trimmed away in one transaction: the listener never reads it.
    const waiter = new JobWaiter(p.queues, { connection: () => createRedis(testRedisConfig, 'worker'), prefix: p.prefix, redis: p.redis.producer });
    const queue = p.queues.queue('objects');
    await queue.pause(); // no worker takes it: the transaction below completes it
    try {
      const { jobId } = await p.queues.enqueue('write', { store: 'main', key: 'waited/trimmed', body: inlineBody('trimmed') });
      const started = Date.now();
      const waited = waiter.wait(jobId, WAIT_MS);
      await new Promise((resolve) => setTimeout(resolve, 300)); // its listener is set up and reading
      const now = Date.now();
      const { keys } = queue;
      await p.redis.producer
        .multi()
        .lrem(keys.wait!, 0, jobId)
        .lrem(keys.paused!, 0, jobId)
        .zadd(keys.completed!, now, jobId)
        .hset(queue.toKey(jobId), 'processedOn', now, 'finishedOn', now, 'returnvalue', JSON.stringify({ key: 'waited/trimmed' }))
        .xadd(keys.events!, '*', 'event', 'completed', 'jobId', jobId, 'returnvalue', '{}')
        .xtrim(keys.events!, 'MAXLEN', 0)
        .exec();
      const status = await waited;
      expect(status?.state).toBe('completed');
      expect(status?.result).toEqual({ key: 'waited/trimmed' });
      // Missing the event, a wait would sit out its whole timeout before reading the same status.
      expect(Date.now() - started).toBeLessThan(WAIT_MS / 2);
    } finally {
      await queue.resume();
      await waiter.close();
    }
  });

  it('keeps waiting while its fail-fast connection is away, and answers once the job completes', async () => {
    const producer = createRedis(testRedisConfig, 'producer');
    await whenReady(producer);
    const queues = createQueues({ connection: producer, prefix: p.prefix, attempts: 1 });
    const waiter = new JobWaiter(queues, { connection: () => createRedis(testRedisConfig, 'worker'), prefix: p.prefix, redis: producer });
    const queue = p.queues.queue('objects');
    await queue.pause();
    try {
      const jobIds = await Promise.all([0, 1, 2, 3, 4].map(async (i) => (await queues.enqueue('write', { store: 'main', key: `waited/away/${i}`, body: inlineBody('x') })).jobId));
      const waits = jobIds.map((jobId) => waiter.wait(jobId, WAIT_MS));
      await sleep(300);
      producer.disconnect(); // the checks of the next two seconds fail: a reconnect, a failover
      await sleep(2_100);
      producer.connect().catch(() => undefined);
      await whenReady(producer);
      await queue.resume();
      expect((await Promise.all(waits)).map((status) => status?.state)).toEqual(jobIds.map(() => 'completed'));
    } finally {
      await queue.resume();
      await waiter.close();
      await queues.close();
      producer.disconnect();
    }
  });
});

describe.skipIf(redisServerUnavailableReason() !== undefined)('JobWaiter on a Redis of its own', () => {
  it('checks waits in constant time whatever the backlog, and sends no check while the last is unanswered', async () => {
    const server = await startRedisServer();
    const producer = createRedis({ redis: { url: server.url, explicit: true } }, 'producer');
    await whenReady(producer);
    const prefix = '{waiter-load}';
    const queues = createQueues({ connection: producer, prefix, attempts: 1 });
    const waiter = new JobWaiter(queues, { connection: () => createRedis({ redis: { url: server.url, explicit: true } }, 'worker'), prefix, redis: producer });
    try {
      await queues.queue('objects').pause();
      const jobIds: string[] = [];
      for (let i = 0; i < 3_000; i++) jobIds.push((await queues.enqueue('write', { store: 'main', key: `backlog/${i}`, body: inlineBody('x') })).jobId);
      const waited = jobIds.slice(-200); // at the back of the backlog: a full state read scans the list for each
      const waits = waited.map((jobId) => waiter.wait(jobId, 8_000)); // ending after the counts below
      await sleep(500); // every wait has read its job's state once
      const lposBefore = await callsOf(server.port, 'lpos');
      await sleep(2_200); // two checks
      expect(await callsOf(server.port, 'lpos')).toBe(lposBefore); // the checks ask the finished sets only
      const zscoreBefore = await callsOf(server.port, 'zscore');
      server.process.kill('SIGSTOP'); // frozen for two checks' time
      await sleep(2_100);
      server.process.kill('SIGCONT');
      await sleep(300);
      // One check was in flight when it froze, at most one more is sent after: not one per tick it missed.
      expect(await callsOf(server.port, 'zscore')).toBeLessThanOrEqual(zscoreBefore + 2 * 2 * waited.length);
      expect((await Promise.all(waits)).every((status) => status?.state === 'waiting')).toBe(true);
    } finally {
      server.process.kill('SIGCONT');
      await waiter.close();
      await queues.close();
      producer.disconnect();
      await server.stop();
    }
  });
});
