/**
 * Redis connections, from `REDIS_URL` or `REDIS_CLUSTER_NODES`. Two roles, following BullMQ's production guide:
 *
 * - `worker`: BullMQ workers, the events bus of a worker process and blocking readers. `maxRetriesPerRequest: null`
 *   (BullMQ refuses anything else for blocking connections) and an offline queue, so a Redis restart pauses the
 *   work instead of failing it.
 * - `producer`: the API's queues and reads. No offline queue and one retry, so a request made while Redis is down
 *   fails at once and the API can answer 503 instead of hanging; and a command timeout, for a Redis that stops
 *   answering without closing the connection (a partition, a frozen server), which the first two never notice.
 *   Nothing blocks on a producer connection: blocking readers (the job waiter, workers) are `worker` connections.
 *
 * Reconnection backs off exponentially up to 20 s in both roles (BullMQ's own default curve).
 */
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { Config } from './config.js';

export type RedisConnection = Redis | Cluster;
export type RedisRole = 'worker' | 'producer';

export interface RedisConnectionOptions {
  /** A name shown by `CLIENT LIST`, e.g. `kyozo:worker`. */
  connectionName?: string;
  /** Connect on first use instead of at once. */
  lazyConnect?: boolean;
  /** A producer's command timeout (default PRODUCER_COMMAND_TIMEOUT_MS). */
  commandTimeoutMs?: number;
}

/** Long enough for the slowest command a producer sends (a board's clean of a large queue), short for a client. */
export const PRODUCER_COMMAND_TIMEOUT_MS = 10_000;

function retryStrategy(times: number): number {
  return Math.max(Math.min(Math.exp(times), 20_000), 1_000);
}

function roleOptions(role: RedisRole): Pick<RedisOptions, 'maxRetriesPerRequest' | 'enableOfflineQueue'> {
  return role === 'worker'
    ? { maxRetriesPerRequest: null, enableOfflineQueue: true }
    : { maxRetriesPerRequest: 1, enableOfflineQueue: false };
}

export function createRedis(
  config: Pick<Config, 'redis'>,
  role: RedisRole,
  options: RedisConnectionOptions = {},
): RedisConnection {
  const common: RedisOptions = {
    ...roleOptions(role),
    ...(role === 'producer' ? { commandTimeout: options.commandTimeoutMs ?? PRODUCER_COMMAND_TIMEOUT_MS } : {}),
    retryStrategy,
    connectionName: options.connectionName,
    lazyConnect: options.lazyConnect ?? false,
  };
  const nodes = config.redis.clusterNodes;
  if (nodes !== undefined && nodes.length > 0) {
    return new Cluster(nodes, {
      redisOptions: common,
      clusterRetryStrategy: retryStrategy,
      enableOfflineQueue: common.enableOfflineQueue,
      lazyConnect: common.lazyConnect,
    });
  }
  return new Redis(config.redis.url, common);
}

/** A connection that did not become ready (`whenReady`): the API answers it 503, as any Redis outage. */
export class RedisNotReadyError extends Error {
  override readonly name = 'RedisNotReadyError';
}

/**
 * Resolves once the connection answers. Producer connections have no offline queue: a command sent before
 * `ready` fails, so whoever builds one waits here first.
 */
export async function whenReady(connection: RedisConnection, timeoutMs = 10_000): Promise<void> {
  if (connection.status === 'ready') return;
  if (connection.status === 'wait') {
    await connection.connect();
    return;
  }
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new RedisNotReadyError(`Redis did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
    const onReady = () => {
      cleanup();
      resolve();
    };
    const onEnd = () => {
      cleanup();
      reject(new RedisNotReadyError('Redis connection closed before it was ready'));
    };
    const cleanup = () => {
      clearTimeout(timer);
      connection.off('ready', onReady);
      connection.off('end', onEnd);
    };
    connection.on('ready', onReady);
    connection.on('end', onEnd);
  });
}

/** Closes politely when connected, at once otherwise (a `QUIT` to a dead server would wait for reconnection). */
export async function closeRedis(connection: RedisConnection): Promise<void> {
  if (connection.status === 'end') return;
  if (connection.status === 'ready') {
    try {
      await connection.quit();
      return;
    } catch {
      // fall through to a hard disconnect
    }
  }
  connection.disconnect();
}

/**
 * BullMQ prints (console.error, with its stack) every 'error' event of a queue or reader that nobody listens to. The
 * errors of a shared connection are logged once, by the connection's owner: its queues and readers just take them.
 */
export function takeConnectionErrors<T extends { on(event: 'error', listener: (error: Error) => void): unknown }>(emitter: T): T {
  emitter.on('error', () => undefined);
  return emitter;
}

const HSET_IF_EXISTS = `if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return 1`;

/**
 * Sets a field of a hash only if the hash exists: a job's hash written to after the job was removed (by retention,
 * or by another run that completed it) must not come back as a stray key with no expiry, which BullMQ would take
 * for a job. Resolves whether it was set.
 */
export async function hsetIfExists(connection: RedisConnection, key: string, field: string, value: string): Promise<boolean> {
  return Number(await connection.eval(HSET_IF_EXISTS, 1, key, field, value)) === 1;
}
