/**
 * Hybrid's hot-tier channel: how one process tells every other process holding the same hybrid store that a key's
 * hot copy is stale (after a write, version, restore or delete) or that a tiering plan is to be followed.
 *
 * The Redis version is a pub/sub channel per store (`<prefix>:hybrid:<store>:hot`). Pub/sub keeps no backlog, so
 * a subscriber that lost its connection may have missed invalidations: the channel then tells its listener
 * `reset` (drop every hot copy) and reports `live: false` until it is subscribed again; the provider neither
 * serves nor promotes from its hot tier meanwhile. Each channel instance stamps what it publishes with its own
 * origin id and does not hand its own messages back: the publisher has already applied them.
 */
import { randomUUID } from 'node:crypto';
import { Cluster, type Redis } from 'ioredis';
import type { Logger } from '../log.js';

export interface TieringPlan {
  promote: string[];
  demote: string[];
}

export type HotMessage =
  | { type: 'invalidate'; keys: string[] }
  | { type: 'plan'; plan: TieringPlan }
  /** Local only: messages may have been missed, every hot copy is suspect. */
  | { type: 'reset' };

export interface HotChannel {
  /** Resolves once Redis has taken the message (and handed it to every subscriber connected at that moment). */
  publish(message: Exclude<HotMessage, { type: 'reset' }>): Promise<void>;
  /** Resolves once subscribed; the returned function unsubscribes. */
  subscribe(listener: (message: HotMessage) => void): Promise<() => Promise<void>>;
  /** False while messages may be getting lost (the subscriber connection is down). */
  readonly live: boolean;
}

/** A channel for one process alone (tests, a single embedded process): nothing crosses a process boundary. */
export function localHotChannel(): HotChannel {
  return {
    live: true,
    async publish() {},
    async subscribe() {
      return async () => {};
    },
  };
}

interface Envelope {
  origin: string;
  message: HotMessage;
}

function parse(raw: string): Envelope | undefined {
  try {
    const envelope = JSON.parse(raw) as Partial<Envelope>;
    const type = envelope.message?.type;
    if (typeof envelope.origin !== 'string' || (type !== 'invalidate' && type !== 'plan')) return undefined;
    return envelope as Envelope;
  } catch {
    return undefined;
  }
}

export interface RedisHotChannelOptions {
  /** Publishes on it as it is; the subscriber is a duplicate of it (a subscribed connection can do nothing else). */
  redis: Redis | Cluster;
  channel: string;
  log?: Logger;
  /** How often the subscriber is asked to answer a PING (default 5 s; it has as long again to answer). */
  heartbeatMs?: number;
}

/**
 * A subscriber whose connection stops carrying bytes without closing (a network partition, a NAT or firewall idle
 * drop, a frozen proxy) would never hear of it, and invalidations would be lost while hot copies are served: it is
 * PINGed, and one that does not answer in time is taken for lost (hot copies dropped) and reconnected.
 */
const DEFAULT_HEARTBEAT_MS = 5_000;

export function createRedisHotChannel({ redis, channel, log, heartbeatMs = DEFAULT_HEARTBEAT_MS }: RedisHotChannelOptions): HotChannel {
  const origin = randomUUID();
  const listeners = new Set<(message: HotMessage) => void>();
  let subscriber: Redis | Cluster | undefined;
  let subscribing: Promise<void> | undefined;
  let live = false;
  let heartbeat: NodeJS.Timeout | undefined;

  const deliver = (message: HotMessage) => {
    for (const listener of listeners) {
      try {
        listener(message);
      } catch (error) {
        log?.error({ err: error, channel }, 'hot-tier listener failed');
      }
    }
  };

  async function open(): Promise<void> {
    // A subscriber must queue its SUBSCRIBE until connected and never give up on a reconnect, whatever the role
    // of the connection it is copied from (the API's fails fast).
    const connection =
      redis instanceof Cluster
        ? redis.duplicate(undefined, { enableOfflineQueue: true, redisOptions: { ...redis.options.redisOptions, maxRetriesPerRequest: null } })
        : redis.duplicate({ enableOfflineQueue: true, maxRetriesPerRequest: null });
    connection.on('message', (from: string, raw: string) => {
      if (from !== channel) return;
      const envelope = parse(raw);
      if (envelope === undefined) log?.warn({ channel }, 'ignored a malformed hot-tier message');
      else if (envelope.origin !== origin) deliver(envelope.message);
    });
    connection.on('error', (error: Error) => log?.warn({ err: error, channel }, 'hot-tier subscriber connection error'));
    connection.on('close', () => {
      if (!live) return;
      live = false;
      log?.warn({ channel }, 'hot-tier subscriber disconnected: hot copies dropped until it is back');
      deliver({ type: 'reset' });
    });
    // ioredis subscribes again by itself after a reconnect, but reports `ready` before the server has confirmed
    // it: subscribing once more (harmless) tells when messages flow again. The reset then also covers reads that
    // began while disconnected and may carry content an unseen invalidation made stale.
    connection.on('ready', () => {
      if (live || subscriber !== connection) return;
      connection.subscribe(channel).then(
        () => {
          if (live || subscriber !== connection) return;
          live = true;
          log?.info({ channel }, 'hot-tier subscriber back');
          deliver({ type: 'reset' });
        },
        (error: unknown) => log?.warn({ err: error, channel }, 'hot-tier resubscribe failed'),
      );
    });
    await connection.subscribe(channel);
    subscriber = connection;
    live = true;
    heartbeat = setInterval(() => {
      if (!live || subscriber !== connection) return;
      let answered = false;
      const late = setTimeout(() => {
        if (answered || !live || subscriber !== connection) return;
        live = false;
        log?.warn({ channel, heartbeatMs }, 'hot-tier subscriber did not answer a PING: hot copies dropped, reconnecting');
        deliver({ type: 'reset' });
        connection.disconnect(true); // `ready` then subscribes again, and turns hot copies back on
      }, heartbeatMs).unref();
      connection.ping().then(
        () => {
          answered = true;
          clearTimeout(late);
        },
        () => undefined, // a closed connection: its `close` handler has it
      );
    }, heartbeatMs);
    heartbeat.unref();
  }

  return {
    get live() {
      return live;
    },
    async publish(message) {
      await redis.publish(channel, JSON.stringify({ origin, message } satisfies Envelope));
    },
    async subscribe(listener) {
      listeners.add(listener);
      subscribing ??= open();
      await subscribing;
      return async () => {
        listeners.delete(listener);
        if (listeners.size > 0 || subscriber === undefined) return;
        const connection = subscriber;
        subscriber = undefined;
        subscribing = undefined;
        live = false;
        clearInterval(heartbeat);
        await connection.quit().catch(() => connection.disconnect());
      };
    },
  };
}
