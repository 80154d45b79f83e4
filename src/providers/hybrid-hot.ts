/**
 * Hybrid's hot tier in one process: a provider holding the content (ram by default) and, beside it, what hybrid
 * needs to serve from it: the cold tier's description of each copy (etag, updatedAt, versionId as cold has them),
 * its last read, and the bytes in use.
 *
 * - LRU: `entries` is kept in order of last read (a read moves its key to the end), so the least recently read
 *   copy is the first one, and copies idle past the TTL are a prefix of the map: a sweep stops at the first live
 *   one. A copy idle past the TTL is also refused on lookup, so demotion does not wait for the sweep.
 * - Budget: copies up to `maxEntryBytes` (default `maxBytes / 8`, so one large object cannot empty the tier) are
 *   admitted, each charged what a ram store charges for it (content, key, content type, metadata and a fixed cost
 *   per entry: `ramWriteBytes`), so that the tier and its ram store agree on what fits; the least recently read ones
 *   make room, save those the admission is told to keep (a tiering pass
 *   keeps the keys it chose). Bytes of admissions in flight are reserved and count against `maxBytes` too; an
 *   admission that does not fit even with every other copy evicted is refused. The hot provider's own budget must
 *   be at least `maxBytes`.
 * - Staleness: a copy is admitted only if no invalidation of its key arrived since the cold read it came from
 *   began (`mark()` before the read, `admit(..., mark)` after). Admissions of one key run one at a time, and the
 *   check is repeated once the content is in the hot provider, so a copy described as X always holds X.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from '../log.js';
import { InvalidArgumentError } from './errors.js';
import { describeWrite } from './metadata.js';
import { withProcessMutex } from './process-mutex.js';
import { ramWriteBytes } from './ram.js';
import type { ObjectInfo, StorageProvider } from './types.js';

export type DemotionReason = 'idle' | 'lru' | 'invalidated' | 'plan' | 'reset' | 'lost';

export interface HotTierOptions {
  provider: StorageProvider;
  /** HOT_MAX_BYTES. 0 turns the hot tier off. */
  maxBytes: number;
  /** HOT_STORAGE_TTL in ms. */
  ttlMs: number;
  /** Largest copy admitted. Default `maxBytes / 8`. */
  maxEntryBytes?: number;
  /** Remembered invalidations (for the staleness check) before they are summarized as "everything". Default 10,000. */
  maxRememberedInvalidations?: number;
  log?: Logger;
  now?: () => number;
}

interface HotEntry {
  info: ObjectInfo;
  /** What the copy counts against `maxBytes`: what a ram store charges for it (content, key, type, metadata, entry). */
  charged: number;
  /** What a read from here answers, made once: the hot read path allocates nothing it can avoid. */
  served: HotObjectInfo;
  lastRead: number;
}

export type HotObjectInfo = ObjectInfo & { tier: 'hot' };

export class HotTier {
  readonly provider: StorageProvider;
  readonly maxBytes: number;
  readonly maxEntryBytes: number;
  readonly ttlMs: number;
  readonly counters = {
    hits: 0,
    misses: 0,
    promotions: 0,
    demotions: { idle: 0, lru: 0, invalidated: 0, plan: 0, reset: 0, lost: 0 } satisfies Record<DemotionReason, number>,
  };
  private readonly entries = new Map<string, HotEntry>();
  /** What the copies in `entries` are charged. */
  private usedBytes = 0;
  /** Bytes of admissions in flight: not in `entries` yet, so no eviction can free them. */
  private reservedBytes = 0;
  /** Bumped by every invalidation; `invalidatedAt` remembers each key's last one, `floor` summarizes the forgotten. */
  private sequence = 0;
  private floor = 0;
  private readonly invalidatedAt = new Map<string, number>();
  private readonly maxRemembered: number;
  private readonly id = randomUUID();
  private readonly log?: Logger;
  private readonly now: () => number;

  constructor(options: HotTierOptions) {
    this.provider = options.provider;
    this.maxBytes = options.maxBytes;
    this.maxEntryBytes = Math.min(options.maxBytes, options.maxEntryBytes ?? Math.floor(options.maxBytes / 8));
    this.ttlMs = options.ttlMs;
    this.maxRemembered = options.maxRememberedInvalidations ?? 10_000;
    this.log = options.log;
    this.now = options.now ?? Date.now;
  }

  get objects(): number {
    return this.entries.size;
  }

  /** Bytes held, admissions in flight included. */
  get bytes(): number {
    return this.usedBytes + this.reservedBytes;
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  /** What a copy of `key` described by `info` counts against `maxBytes`: what a ram store charges for it. */
  charge(key: string, info: Pick<ObjectInfo, 'size' | 'contentType' | 'metadata'>): number {
    return this.entries.get(key)?.charged ?? ramWriteBytes(key, info.size, describeWrite(info));
  }

  /** Cold's description of the hot copy of `key`, counted as a hit and made most recently read; else a miss. */
  lookup(key: string): HotObjectInfo | undefined {
    const entry = this.live(key);
    if (entry === undefined) {
      this.counters.misses++;
      return undefined;
    }
    this.counters.hits++;
    entry.lastRead = this.now();
    this.entries.delete(key);
    this.entries.set(key, entry);
    return entry.served;
  }

  /** Like `lookup`, for a stat: neither a read nor a hit. */
  peek(key: string): HotObjectInfo | undefined {
    return this.live(key)?.served;
  }

  /** Taken before a cold read whose content may be admitted. */
  mark(): number {
    return this.sequence;
  }

  /**
   * Puts `content` (described by cold's `info`) into the hot tier, unless it is too large, the tier is off, its
   * description is one no store takes, an invalidation of `key` arrived since `mark`, or it fits only by evicting a
   * copy of `keep`. Never rejects: a copy that cannot be made is simply not made.
   */
  async admit(key: string, info: ObjectInfo, content: Buffer, mark: number, keep: ReadonlySet<string> = new Set()): Promise<boolean> {
    if (this.maxBytes === 0 || content.length > this.maxEntryBytes || this.stale(key, mark)) return false;
    return withProcessMutex(`hybrid-hot:${this.id}:${key}`, async () => {
      if (this.stale(key, mark)) return false;
      const previous = this.entries.get(key);
      if (previous !== undefined && previous.info.etag === info.etag) return true;
      if (previous !== undefined) await this.remove(key, 'invalidated');
      const opts = { contentType: info.contentType, metadata: info.metadata };
      const charged = this.admissibleCharge(key, { ...info, size: content.length });
      if (charged === undefined) return false;
      const victims = this.victimsFor(charged, keep);
      if (victims === undefined) return false;
      const evicted = victims.map((victim) => this.remove(victim, 'lru'));
      this.reservedBytes += charged; // before anything is awaited: admissions of other keys run meanwhile
      try {
        await Promise.all(evicted);
        await this.provider.write(key, content, opts);
      } catch (error) {
        this.log?.debug({ err: error, key }, 'hot tier refused a copy');
        return false;
      } finally {
        this.reservedBytes -= charged;
      }
      if (this.stale(key, mark)) {
        await this.provider.delete(key).catch(() => undefined);
        return false;
      }
      this.usedBytes += charged;
      this.entries.set(key, { info, charged, served: { ...info, tier: 'hot' }, lastRead: this.now() });
      this.counters.promotions++;
      return true;
    });
  }

  /** The key's content changed somewhere: its copy goes now, and copies read before now may not be admitted. */
  invalidate(key: string): void {
    this.sequence++;
    this.invalidatedAt.set(key, this.sequence);
    if (this.invalidatedAt.size > this.maxRemembered) {
      this.invalidatedAt.clear();
      this.floor = this.sequence;
    }
    if (this.entries.has(key)) void this.remove(key, 'invalidated');
  }

  /** Every copy is suspect (messages may have been missed): all go, and no read begun before now is admitted. */
  reset(): void {
    this.sequence++;
    this.floor = this.sequence;
    this.invalidatedAt.clear();
    for (const key of [...this.entries.keys()]) void this.remove(key, 'reset');
  }

  /** Drops the copy of `key` if there is one; resolves when the hot provider has let go of its content. */
  demote(key: string, reason: DemotionReason): Promise<number> {
    const size = this.entries.get(key)?.info.size ?? 0;
    if (!this.entries.has(key)) return Promise.resolve(0);
    return this.remove(key, reason).then(() => size);
  }

  /** Drops copies idle past the TTL. */
  sweep(): void {
    const idleBefore = this.now() - this.ttlMs;
    for (const [key, entry] of this.entries) {
      if (entry.lastRead >= idleBefore) break;
      void this.remove(key, 'idle');
    }
  }

  async clear(): Promise<void> {
    await Promise.all([...this.entries.keys()].map((key) => this.remove(key, 'reset')));
  }

  /**
   * `charge`, or undefined for a description no store takes: cold may hold an object another tool wrote, with
   * metadata named as the contract refuses (`file.name`). It is served from cold, never copied here.
   */
  private admissibleCharge(key: string, info: ObjectInfo): number | undefined {
    try {
      return this.charge(key, info);
    } catch (error) {
      if (!(error instanceof InvalidArgumentError)) throw error;
      this.log?.debug({ err: error, key }, 'not admitted: the hot tier would refuse its description');
      return undefined;
    }
  }

  private live(key: string): HotEntry | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    if (this.now() - entry.lastRead <= this.ttlMs) return entry;
    void this.remove(key, 'idle');
    return undefined;
  }

  /**
   * The least recently read copies, none of `keep`, whose eviction makes room for `bytes` more; undefined when even
   * all of them would not (admissions in flight and the copies kept hold the rest).
   */
  private victimsFor(bytes: number, keep: ReadonlySet<string>): string[] | undefined {
    const victims: string[] = [];
    let excess = this.bytes + bytes - this.maxBytes;
    for (const [key, entry] of this.entries) {
      if (excess <= 0) break;
      if (keep.has(key)) continue;
      victims.push(key);
      excess -= entry.charged;
    }
    return excess <= 0 ? victims : undefined;
  }

  private stale(key: string, mark: number): boolean {
    return mark < this.floor || (this.invalidatedAt.get(key) ?? -1) > mark;
  }

  /** Forgets the entry at once (so nothing serves it from here on) and deletes its content. */
  private remove(key: string, reason: DemotionReason): Promise<void> {
    const entry = this.entries.get(key);
    if (entry === undefined) return Promise.resolve();
    this.entries.delete(key);
    this.usedBytes -= entry.charged;
    this.counters.demotions[reason]++;
    return this.provider.delete(key).catch((error: unknown) => this.log?.warn({ err: error, key }, 'hot tier could not drop a copy'));
  }
}
