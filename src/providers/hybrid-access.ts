/**
 * Hybrid's read statistics: how often and how lately each key was read, in this process (to promote at once on
 * the read that crosses the threshold) and in Redis, shared by every process (for the `tier` job's plan).
 *
 * Reads never wait for Redis: `record` updates two in-process maps and schedules a flush; one flush at a time
 * sends everything recorded since the previous one as one pipeline (so under load a flush carries many reads, and
 * a slow or absent Redis costs at most `maxPendingKeys` entries of memory: past that, reads are not counted).
 * Failures are logged, at most once a minute, and counted.
 *
 * "Reads within HOT_STORAGE_TTL" is a sliding window estimated from two fixed windows of that length (the current
 * one plus the share of the previous one that still overlaps the last TTL), as rate limiters do: one hash per
 * window, expiring on its own. In this process the window is fixed and starts at the key's first read in it.
 *
 * Redis keys, under the store's namespace `<prefix>:hybrid:<store>` (hash-tagged by the prefix, so one slot):
 * `:reads:<window number>` hash key -> reads in that window; `:last` sorted set key -> last read (ms epoch).
 */
import type { Cluster, Redis } from 'ioredis';
import type { Logger } from '../log.js';
import type { TieringPlan } from './hybrid-invalidation.js';

export interface AccessLogOptions {
  redis: Redis | Cluster;
  /** `<prefix>:hybrid:<store>`. */
  namespace: string;
  /** ACCESS_THRESHOLD: reads within the window that make a key hot. */
  threshold: number;
  /** HOT_STORAGE_TTL in ms: the counting window, and how long a key may go unread before it is demoted. */
  windowMs: number;
  log?: Logger;
  /** Keys whose window this process remembers; the longest-tracked are forgotten first. Default 100,000. */
  maxTrackedKeys?: number;
  /** Distinct keys waiting for a flush before further reads go uncounted. Default 10,000. */
  maxPendingKeys?: number;
  now?: () => number;
}

export interface PlanLimits {
  /** Default 1,000, most read first. */
  maxPromote?: number;
  /** Default 10,000. */
  maxDemote?: number;
}

interface Window {
  count: number;
  since: number;
}

interface Pending {
  count: number;
  last: number;
}

const FAILURE_LOG_INTERVAL_MS = 60_000;
const TRIM_INTERVAL_MS = 60_000;

export class AccessLog {
  readonly threshold: number;
  readonly windowMs: number;
  readonly counters = { flushes: 0, failures: 0, uncounted: 0 };
  private readonly redis: Redis | Cluster;
  private readonly namespace: string;
  private readonly log?: Logger;
  private readonly maxTracked: number;
  private readonly maxPending: number;
  private readonly now: () => number;
  private readonly windows = new Map<string, Window>();
  private pending = new Map<string, Pending>();
  private forgotten = new Set<string>();
  private scheduled = false;
  private flushing: Promise<void> | undefined;
  private lastFailureLog = 0;
  private lastTrim = 0;

  constructor(options: AccessLogOptions) {
    this.redis = options.redis;
    this.namespace = options.namespace;
    this.threshold = options.threshold;
    this.windowMs = options.windowMs;
    this.log = options.log;
    this.maxTracked = options.maxTrackedKeys ?? 100_000;
    this.maxPending = options.maxPendingKeys ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  /** Counts one read of `key`; returns the reads of it in this process's current window, this one included. */
  record(key: string): number {
    const now = this.now();
    let window = this.windows.get(key);
    if (window === undefined) {
      // Past the bound the longest-tracked key goes (insertion order): its count merely starts again.
      if (this.windows.size >= this.maxTracked) this.windows.delete(this.windows.keys().next().value!);
      window = { count: 0, since: now };
      this.windows.set(key, window);
    } else if (now - window.since > this.windowMs) {
      window.count = 0;
      window.since = now;
    }
    window.count++;

    const pending = this.pending.get(key);
    if (pending !== undefined) {
      pending.count++;
      pending.last = now;
    } else if (this.pending.size < this.maxPending) {
      this.pending.set(key, { count: 1, last: now });
    } else {
      this.counters.uncounted++;
    }
    this.schedule();
    return window.count;
  }

  /** A deleted key: its counts go, here and (with the next flush) in Redis. */
  forget(key: string): void {
    this.windows.delete(key);
    this.pending.delete(key);
    this.forgotten.add(key);
    this.schedule();
  }

  /** Sends what was recorded so far. Never rejects (failures are logged and counted). */
  flush(): Promise<void> {
    this.flushing ??= this.send()
      .catch((error: unknown) => {
        this.counters.failures++;
        const now = Date.now();
        if (now - this.lastFailureLog >= FAILURE_LOG_INTERVAL_MS) {
          this.lastFailureLog = now;
          this.log?.warn({ err: error, failures: this.counters.failures }, 'hybrid read counts could not be written to Redis');
        }
      })
      .finally(() => {
        this.flushing = undefined;
        if (this.pending.size > 0 || this.forgotten.size > 0) this.schedule();
      });
    return this.flushing;
  }

  /**
   * The plan every process should follow, from the counts of all processes: keys read at least `threshold` times
   * within the last window, and keys not read for a whole window. Also drops last-read entries two windows old.
   */
  async plan(limits: PlanLimits = {}): Promise<TieringPlan> {
    await this.flush(); // one may have been in flight already: the second sends what arrived meanwhile
    await this.flush();
    const now = this.now();
    const current = Math.floor(now / this.windowMs);
    const overlap = 1 - (now - current * this.windowMs) / this.windowMs;
    const [recent, previous] = await Promise.all([this.readCounts(current), this.readCounts(current - 1)]);
    const idle = await this.redis.zrangebyscore(this.lastKey, '-inf', `(${now - this.windowMs}`, 'LIMIT', 0, limits.maxDemote ?? 10_000);
    await this.redis.zremrangebyscore(this.lastKey, '-inf', `(${now - 2 * this.windowMs}`);

    const idleKeys = new Set(idle);
    const estimates = new Map<string, number>();
    for (const [key, count] of previous) estimates.set(key, count * overlap);
    for (const [key, count] of recent) estimates.set(key, (estimates.get(key) ?? 0) + count);
    const promote = [...estimates]
      .filter(([key, reads]) => reads >= this.threshold && !idleKeys.has(key))
      .sort((a, b) => b[1] - a[1])
      .slice(0, limits.maxPromote ?? 1_000)
      .map(([key]) => key);
    return { promote, demote: idle };
  }

  /** Flushes what is pending (waiting at most `timeoutMs`). */
  async close(timeoutMs = 2_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.flush(), new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
  }

  private get lastKey(): string {
    return `${this.namespace}:last`;
  }

  private readsKey(window: number): string {
    return `${this.namespace}:reads:${window}`;
  }

  private schedule(): void {
    if (this.scheduled || this.flushing !== undefined) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.flush();
    });
  }

  private async send(): Promise<void> {
    const reads = this.pending;
    const forgotten = this.forgotten;
    if (reads.size === 0 && forgotten.size === 0) return;
    this.pending = new Map();
    this.forgotten = new Set();
    const window = Math.floor(this.now() / this.windowMs);
    const readsKey = this.readsKey(window);
    const pipeline = this.redis.pipeline();
    for (const key of forgotten) {
      pipeline.hdel(readsKey, key);
      pipeline.hdel(this.readsKey(window - 1), key);
      pipeline.zrem(this.lastKey, key);
    }
    for (const [key, { count, last }] of reads) {
      pipeline.hincrby(readsKey, key, count);
      pipeline.zadd(this.lastKey, last, key);
    }
    // Two windows and a margin: the previous window is still read while the current one fills.
    if (reads.size > 0) pipeline.pexpire(readsKey, 2 * this.windowMs + 60_000);
    // Keys unread for two windows leave the last-read set even when no tier job runs to plan.
    const now = this.now();
    if (now - this.lastTrim >= Math.min(this.windowMs, TRIM_INTERVAL_MS)) {
      this.lastTrim = now;
      pipeline.zremrangebyscore(this.lastKey, '-inf', `(${now - 2 * this.windowMs}`);
    }
    const results = await pipeline.exec();
    this.counters.flushes++;
    const failed = results?.find(([error]) => error !== null);
    if (failed) throw failed[0];
  }

  private async readCounts(window: number): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    let cursor = '0';
    do {
      const [next, entries] = await this.redis.hscan(this.readsKey(window), cursor, 'COUNT', 1000);
      cursor = next;
      for (let i = 0; i + 1 < entries.length; i += 2) counts.set(entries[i]!, Number(entries[i + 1]));
    } while (cursor !== '0');
    return counts;
  }
}
