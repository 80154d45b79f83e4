/**
 * Enqueueing while Redis misbehaves, on a private redis-server: a queue whose set-up met a Redis that went away
 * (BullMQ sets a queue up once, in its constructor, and every later add awaits that) works again once Redis is back,
 * without a restart; and a Redis that stops answering without closing the connection is a timely failure.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { createQueues, EnqueueUncertainError } from '../../src/jobs/queue.js';
import { closeRedis, createRedis, whenReady, type RedisConnection } from '../../src/redis.js';
import { redisCli, redisServerUnavailableReason, startRedisServer, until, type RedisServer } from '../cluster/redis-server.js';

const unavailable = redisServerUnavailableReason();
if (unavailable !== undefined) console.log(`queue set-up test skipped: ${unavailable}`);

const servers: RedisServer[] = [];
const restarted: ChildProcess[] = [];
const connections: RedisConnection[] = [];
afterEach(async () => {
  for (const connection of connections.splice(0)) await closeRedis(connection);
  for (const server of servers.splice(0)) await server.stop();
  for (const child of restarted.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) await new Promise((resolve) => (child.once('exit', resolve), child.kill('SIGKILL')));
  }
});

describe.skipIf(unavailable !== undefined)('a queue set up while Redis went away', () => {
  it('is built again once Redis is back: enqueues succeed without a restart (session 10)', async () => {
    const first = await startRedisServer();
    servers.push(first);
    const producer = createRedis({ redis: { url: first.url, explicit: true } }, 'producer', { connectionName: 'kyozo-queue-setup' });
    producer.on('error', () => undefined);
    connections.push(producer);
    await whenReady(producer);
    const queues = createQueues({ connection: producer, prefix: '{queue-setup}', attempts: 3 });
    queues.all(); // built now, as the API builds them for the board right after start
    await first.stop(); // Redis goes away while their set-up is in flight
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    // The same port again, as a restarted Redis comes back where its clients look for it.
    const again = spawn('redis-server', ['--port', String(first.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    restarted.push(again);
    await until(async () => (await redisCli(first.port, 'ping')).trim() === 'PONG', 'the restarted redis-server');
    await until(async () => producer.status === 'ready', 'the producer to reconnect', 30_000);
    let outcome: unknown;
    await until(async () => {
      outcome = await queues.enqueue('delete', { store: 'default', key: 'after-the-blip' }).then(
        (enqueued) => enqueued.jobId,
        (error: Error) => error,
      );
      return typeof outcome === 'string';
    }, 'an enqueue to succeed', 10_000).catch(() => undefined);
    expect(outcome).toMatch(/^objects-/);
    await queues.close();
  });

  it('fails an enqueue in time when Redis stops answering without closing the connection (session 10)', async () => {
    const server = await startRedisServer();
    servers.push(server);
    const producer = createRedis({ redis: { url: server.url, explicit: true } }, 'producer', { connectionName: 'kyozo-queue-frozen', commandTimeoutMs: 500 });
    producer.on('error', () => undefined);
    connections.push(producer);
    await whenReady(producer);
    const queues = createQueues({ connection: producer, prefix: '{queue-frozen}', attempts: 3 });
    await queues.enqueue('delete', { store: 'default', key: 'before' });
    process.kill(server.process.pid!, 'SIGSTOP'); // the TCP connection stays open; nothing answers
    try {
      const began = performance.now();
      await expect(queues.enqueue('delete', { store: 'default', key: 'frozen' })).rejects.toBeInstanceOf(EnqueueUncertainError);
      expect(performance.now() - began).toBeLessThan(5_000);
    } finally {
      process.kill(server.process.pid!, 'SIGCONT');
      await queues.close();
    }
  });
});
