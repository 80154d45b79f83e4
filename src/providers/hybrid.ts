/**
 * The hybrid provider (DESIGN §5, issue 7): three providers of any kind composed into one store.
 *
 * - cold (s3 by default) holds the truth: versions, lists and stats come from it.
 * - backup (disk by default) mirrors cold, so reads go on while cold is unavailable.
 * - hot (ram by default) holds, in each process, copies of the objects read most there.
 *
 * Mutations (write, createVersion, restoreVersion, delete) go to cold, then backup, both durable before they
 * return; a cold failure fails the mutation (the job queue retries it: backup alone is not "written"). Then the
 * key's hot copy is dropped here and the invalidation is published to every other process (`HotChannel`, Redis
 * pub/sub); the mutation returns only after Redis took the message. The backup copy and the invalidation are tried
 * again here a few times (`followUp`): a retry of the job would find cold already changed, count its work as done
 * and never redo them. Failing still, the mutation fails as `ProviderUnavailableError`, and backup (or another
 * process's hot copy) lags cold for that key until its next mutation or the `tier` job's repair pass
 * (`repairBackups`), whichever comes first. Mutations of one key in one process run
 * one at a time, so cold and backup see them in the same order. Preconditions (`ifMatch`, `ifNoneMatch`) are cold's,
 * checked inside that turn: in one process they hold whatever cold is; across processes, as far as cold's own
 * conditional writes do (see s3.ts). Backup follows cold without them. Bodies up to `bufferLimit` (8 MiB) are held in
 * memory and sent to both; a longer stream goes to cold and is then read back from cold into backup (never
 * buffered whole). A version's backup copy carries another id than its cold original: `hybrid-versions.ts` maps
 * them, so versions stay addressable by their cold ids while cold is down, and version cursors always name a cold
 * version: a client paging versions across an outage goes on where it was.
 *
 * Reads: a hot copy, else cold, else (cold unavailable or its circuit open: `ProviderUnavailableError`) backup.
 * The info of a read or a stat says which tier served it (`tier`, sent as `X-Kyozo-Tier`). Backup's answer keeps
 * cold's error where it may be wrong: about a key the pending ledger flags as behind in backup (cold took a write or
 * delete that backup did not follow, or mutations overlapped: backup may hold older content, or what cold deleted),
 * in a listing that covers such a key, and backup's "not found" of any key in the ledger (cold may hold what backup
 * lacks). Every read is counted (`hybrid-access.ts`: in this process at once, in Redis in batches, never awaited).
 * The full read of a current object that makes `accessThreshold` reads of it in this process within
 * `hotTtlSeconds` (and every later one until it is hot) reads the body into memory and admits it to the hot tier, so
 * the next read here is a hot hit; objects larger than `hotMaxBytes / 8` are never promoted. Copies go after
 * `hotTtlSeconds` without a read, or least recently read first when `hotMaxBytes` would be exceeded (`hybrid-hot.ts`).
 *
 * Tiering across processes: the `tier` job calls `planTiering()` (from the counts of all processes in Redis),
 * `applyTiering(plan)` (its own hot tier: the plan's promotions, most read first, as far as they fit `hotMaxBytes`)
 * and `publishTiering(plan)` (every other process applies it on receipt);
 * `isHybridProvider(store)` finds such stores, also behind the metrics layer. Version retention: `deleteVersion`
 * (present when cold has one) removes the version from cold and its copy from backup.
 *
 * Presigned URLs: GET is delegated to cold when cold presigns natively. PUT is refused (`NotSupportedError`): an
 * upload straight to cold would bypass the backup tier and every process's invalidation; uploads go through the API.
 *
 * A hybrid store from configuration (its tiers' kinds and settings): `hybrid-store.ts`.
 */
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import type { Cluster, Redis } from 'ioredis';
import type { Logger } from '../log.js';
import { isReadable, readAhead, readAll } from './body.js';
import { decodeVersionsCursor, encodeVersionsCursor } from './cursor.js';
import { NotFoundError, NotSupportedError, PreconditionFailedError, ProviderUnavailableError, RangeNotSatisfiableError, StorageError } from './errors.js';
import { isFenceError } from './fence.js';
import type { Preconditions } from './if-match.js';
import { withProcessMutex } from './process-mutex.js';
import { AccessLog, type PlanLimits } from './hybrid-access.js';
import { HotTier } from './hybrid-hot.js';
import { createRedisHotChannel, type HotChannel, type HotMessage, type TieringPlan } from './hybrid-invalidation.js';
import { PendingBackups, type MutationEnd, type PendingEntry } from './hybrid-pending.js';
import { VersionMap, type ColdOrigin } from './hybrid-versions.js';
import { compareKeys, validateKey } from './keys.js';
import { allVersions, sameObject, statIfPresent, versionMessage } from './object-info.js';
import type {
  Body,
  Capabilities,
  DeleteOptions,
  Fenced,
  HealthReport,
  ListOptions,
  ObjectInfo,
  Page,
  ProviderStats,
  ReadOptions,
  RestoreOptions,
  StorageProvider,
  Tier,
  VersionInfo,
  VersionOptions,
  WriteOptions,
} from './types.js';

export type { TieringPlan } from './hybrid-invalidation.js';

/** A read result's info on a hybrid store: which tier served it. */
export type TieredObjectInfo = ObjectInfo & { tier: Tier };

export interface TieringOutcome {
  promoted: number;
  promotedBytes: number;
  demoted: number;
  demotedBytes: number;
  /** Plan entries not followed here: already hot, too large, past the hot budget, gone from cold, cold unavailable. */
  skipped: number;
}

export interface BackupRepairOutcome {
  /** Keys whose backup copy (and hot copies elsewhere) were brought back in line with cold. */
  repaired: number;
  /** Keys still in the ledger: mutations running, or repairs that could not be done or confirmed now. */
  pending: number;
}

export interface HybridProviderOptions {
  /** The store's name, for messages, logs and the Redis namespace. */
  name: string;
  hot: StorageProvider;
  cold: StorageProvider;
  backup: StorageProvider;
  /** Read counts and the version map live here; so does the default hot channel. */
  redis: Redis | Cluster;
  /** QUEUE_PREFIX: every Redis key is `<keyPrefix>:hybrid:<name>:...`. */
  keyPrefix: string;
  accessThreshold: number;
  hotTtlSeconds: number;
  hotMaxBytes: number;
  /** Default: Redis pub/sub on `redis`, channel `<keyPrefix>:hybrid:<name>:hot`. */
  channel?: HotChannel;
  /** Bodies up to this many bytes are held in memory and sent to cold and backup alike. Default 8 MiB. */
  bufferLimit?: number;
  /** Largest object promoted. Default `hotMaxBytes / 8`. */
  maxHotObjectBytes?: number;
  log?: Logger;
  now?: () => number;
}

const MIB = 1024 * 1024;
const PROMOTE_WIDTH = 4;
/**
 * Delays before the backup copy or the invalidation of a mutation is tried again after cold took it: a retry of the
 * job cannot redo them, as it finds cold already changed and its work done.
 */
const FOLLOW_UP_RETRY_DELAYS_MS = [50, 250, 1_000];
/**
 * A mutation still running after this long is taken for one whose process died: the repair pass copies its key
 * from cold. (Were it alive after all, the repair only checks, as always, that backup ends up equal to cold.)
 */
const ABANDONED_MUTATION_MS = 10 * 60_000;

/** Runs `step`, and again after each of FOLLOW_UP_RETRY_DELAYS_MS while it fails. */
async function followUp(step: () => Promise<void>): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await step();
    } catch (error) {
      const delay = FOLLOW_UP_RETRY_DELAYS_MS[attempt];
      if (delay === undefined) throw error;
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}

/**
 * A mutation's options for backup, without its preconditions (`ifMatch`, `ifNoneMatch`) and fence: cold checked and
 * passed them, under this process's lock of the key, and backup follows what cold did, even where backup lags.
 */
function forBackup<T extends Fenced & Preconditions>(opts: T | undefined): Omit<T, 'ifMatch' | 'ifNoneMatch' | 'fence'> | undefined {
  if (opts === undefined) return undefined;
  const { ifMatch: _ifMatch, ifNoneMatch: _ifNoneMatch, fence: _fence, ...rest } = opts;
  return rest;
}

/** The same current object as far as a reader can tell (or both absent). */
function sameIfPresent(a: ObjectInfo | undefined, b: ObjectInfo | undefined): boolean {
  return a === undefined || b === undefined ? a === b : sameObject(a, b);
}

/** A backup version as cold lists it: cold's id, and no message where cold's version has none. */
function asColdVersion(version: VersionInfo, origin: ColdOrigin): VersionInfo {
  const { message: _ownMessage, ...unmessaged } = version;
  return { ...(origin.ownMessage ? unmessaged : version), versionId: origin.coldId };
}

function isUnavailable(error: unknown): error is ProviderUnavailableError {
  return error instanceof ProviderUnavailableError;
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export class HybridProvider implements StorageProvider {
  readonly kind = 'hybrid' as const;
  readonly name: string;
  readonly hot: HotTier;
  readonly cold: StorageProvider;
  readonly backup: StorageProvider;
  private readonly access: AccessLog;
  private readonly versions: VersionMap;
  private readonly pending: PendingBackups;
  private readonly channel: HotChannel;
  private readonly bufferLimit: number;
  private readonly log?: Logger;
  private readonly now: () => number;
  private readonly id = randomUUID();
  private readonly served = { hot: 0, cold: 0, backup: 0 };
  private unsubscribe?: () => Promise<void>;
  private sweeper?: NodeJS.Timeout;
  private closing?: Promise<void>;

  constructor(options: HybridProviderOptions) {
    this.name = options.name;
    this.cold = options.cold;
    this.backup = options.backup;
    this.log = options.log;
    this.bufferLimit = options.bufferLimit ?? 8 * MIB;
    this.now = options.now ?? Date.now;
    const namespace = `${options.keyPrefix}:hybrid:${options.name}`;
    const ttlMs = options.hotTtlSeconds * 1000;
    this.hot = new HotTier({
      provider: options.hot,
      maxBytes: options.hotMaxBytes,
      maxEntryBytes: options.maxHotObjectBytes,
      ttlMs,
      log: options.log,
      now: options.now,
    });
    this.access = new AccessLog({
      redis: options.redis,
      namespace,
      threshold: options.accessThreshold,
      windowMs: ttlMs,
      log: options.log,
      now: options.now,
    });
    this.versions = new VersionMap(options.redis, namespace);
    this.pending = new PendingBackups(options.redis, namespace);
    this.channel = options.channel ?? createRedisHotChannel({ redis: options.redis, channel: `${namespace}:hot`, log: options.log });
    if (this.cold.deleteVersion !== undefined) this.deleteVersion = (key, versionId) => this.removeVersion(key, versionId);
    if (this.cold.listKeys !== undefined) this.listKeys = (opts) => this.listColdKeys(opts);
  }

  /** Subscribes to the hot channel and starts the idle sweep; `createHybridProvider` calls it. */
  async start(): Promise<void> {
    this.unsubscribe = await this.channel.subscribe((message) => this.onMessage(message));
    this.sweeper = setInterval(() => this.hot.sweep(), Math.min(60_000, Math.max(100, this.hot.ttlMs / 2)));
    this.sweeper.unref();
  }

  get capabilities(): Capabilities {
    const cold = this.cold.capabilities;
    return {
      versioning: cold.versioning,
      presign: cold.presign === 'native' && this.cold.presign !== undefined ? 'native' : 'signed-url',
      diff: false,
      branches: false,
      rangeReads: true,
      defaultAuthor: cold.defaultAuthor,
      maxObjectBytes: cold.maxObjectBytes,
    };
  }

  // ---- reads ----

  async read(key: string, opts?: ReadOptions): Promise<{ info: TieredObjectInfo; body: Readable }> {
    if (opts?.versionId === undefined && this.channel.live) {
      const info = this.hot.lookup(key);
      if (info !== undefined) {
        try {
          const { body } = await this.hot.provider.read(key, opts?.range === undefined ? undefined : { range: opts.range });
          this.access.record(key);
          this.served.hot++;
          return { info, body };
        } catch (error) {
          // A range past the end is the client's, and cold would refuse it too. Anything else is the hot tier's own
          // trouble (it lost the copy, or it is down: a disk or s3 hot tier can be): the copy goes and cold answers.
          if (error instanceof RangeNotSatisfiableError) throw error;
          if (!(error instanceof NotFoundError)) this.log?.warn({ err: error, key }, 'hot tier could not serve its copy: read from cold');
          await this.hot.demote(key, 'lost');
        }
      }
    }
    const mark = this.hot.mark();
    const { tier, value } = await this.degrading(
      () => this.cold.read(key, opts),
      async (coldError) => {
        const backupId = await this.backupVersionId(key, opts?.versionId, coldError);
        const served = await this.fromBackup(key, coldError, () => this.backup.read(key, { ...opts, versionId: backupId }));
        return { info: await this.asColdObject(served.info, opts?.versionId), body: served.body };
      },
    );
    this.served[tier]++;
    const reads = this.access.record(key);
    const { info, body } = value;
    const promote =
      tier === 'cold' &&
      opts?.versionId === undefined &&
      opts?.range === undefined &&
      reads >= this.access.threshold &&
      info.size <= this.hot.maxEntryBytes &&
      this.channel.live;
    if (!promote) return { info: { ...info, tier }, body };
    const content = await readAll(body);
    await this.hot.admit(key, info, content, mark);
    return { info: { ...info, tier }, body: Readable.from([content]) };
  }

  async stat(key: string, opts?: { versionId?: string }): Promise<TieredObjectInfo> {
    if (opts?.versionId === undefined && this.channel.live) {
      const info = this.hot.peek(key);
      if (info !== undefined) return info;
    }
    const { tier, value } = await this.degrading(
      () => this.cold.stat(key, opts),
      async (coldError) => {
        const backupId = await this.backupVersionId(key, opts?.versionId, coldError);
        return this.asColdObject(await this.fromBackup(key, coldError, () => this.backup.stat(key, { versionId: backupId })), opts?.versionId);
      },
    );
    return { ...value, tier };
  }

  async list(opts?: ListOptions): Promise<Page<ObjectInfo>> {
    const { value } = await this.degrading(
      () => this.cold.list(opts),
      async (coldError) => {
        const page = await this.backupListing(opts, coldError);
        const items = await this.asColdIds(page.items);
        return { ...page, items: items.map((item): TieredObjectInfo => ({ ...item, tier: 'backup' })) };
      },
    );
    return value;
  }

  /** Present when cold lists keys alone (s3: no HEAD per key), so that a listing by delimiter describes only what it answers. */
  readonly listKeys?: (opts?: ListOptions) => Promise<Page<string>>;

  private async listColdKeys(opts?: ListOptions): Promise<Page<string>> {
    const { value } = await this.degrading(
      () => this.cold.listKeys!(opts),
      async (coldError) => {
        const page = await this.backupListing(opts, coldError);
        return { ...page, items: page.items.map((item) => item.key) };
      },
    );
    return value;
  }

  async listVersions(key: string, opts?: { cursor?: string; limit?: number }): Promise<Page<VersionInfo>> {
    const { value } = await this.degrading(
      () => this.cold.listVersions(key, opts),
      (coldError) => this.fromBackup(key, coldError, () => this.backupVersions(key, opts, coldError)),
    );
    return value;
  }

  // ---- mutations ----

  async write(key: string, body: Body, opts?: WriteOptions): Promise<ObjectInfo> {
    validateKey(key);
    const staged = await this.stage(body);
    return this.mutate(
      key,
      () => this.cold.write(key, staged, opts),
      async (info) => {
        const mirrored = { contentType: info.contentType, metadata: info.metadata };
        const content = isReadable(staged) ? await this.coldBody(key, info.versionId) : staged;
        if (info.versionId === undefined) {
          const copy = await this.backup.write(key, content, mirrored);
          if (copy.etag !== info.etag) this.log?.warn({ key }, 'backup holds a newer write of this key than the one just made (a concurrent writer)');
          return;
        }
        // Cold records every write as a version: so does backup, to keep version ids mappable. Backup needs a message
        // where cold has none: the map notes it as hybrid's own, so a user's message "write" stays one.
        const copy = await this.backup.createVersion(key, content, { ...mirrored, message: 'write' });
        await this.linkCopy(key, info.versionId, copy.versionId, true);
      },
    );
  }

  async createVersion(key: string, body: Body, opts: VersionOptions): Promise<VersionInfo> {
    validateKey(key);
    const staged = await this.stage(body);
    return this.mutate(
      key,
      () => this.cold.createVersion(key, staged, opts),
      async (version) => {
        const content = isReadable(staged) ? await this.coldBody(key, version.versionId) : staged;
        const copy = await this.backup.createVersion(key, content, forBackup(opts)!);
        await this.linkCopy(key, version.versionId, copy.versionId);
      },
    );
  }

  async restoreVersion(key: string, versionId: string, opts?: RestoreOptions): Promise<VersionInfo> {
    const author = opts?.author ? { author: opts.author } : {};
    return this.mutate(
      key,
      // The message as given: cold's own default applies (an s3 cold tier leaves it out where its metadata has no room).
      () => this.cold.restoreVersion(key, versionId, { ...(opts?.message === undefined ? {} : { message: opts.message }), ...author, fence: opts?.fence }),
      async (version) => {
        // Backup's copy says what cold's version says; where that is nothing, backup's own default applies, as cold's
        // did (an s3 backup tier leaves it out where the version's metadata has no room for it either).
        const described = { ...(version.message === undefined ? {} : { message: version.message }), ...author };
        const backupId = await this.versions.backupIdOf(key, versionId).catch(() => undefined);
        let copy =
          backupId === undefined
            ? undefined
            : await this.backup.restoreVersion(key, backupId, described).catch((error: unknown) => {
                if (error instanceof NotFoundError) return undefined;
                throw error;
              });
        if (copy === undefined) {
          // The backup never had that version (made before backup existed, or its map entry was lost): copy it.
          const { info, body } = await this.cold.read(key, { versionId: version.versionId });
          const message = version.message ?? `restore ${versionId}`;
          copy = await this.backup.createVersion(key, body, { ...author, message, contentType: info.contentType, metadata: info.metadata });
        }
        await this.linkCopy(key, version.versionId, copy.versionId);
      },
    );
  }

  async delete(key: string, opts?: DeleteOptions): Promise<void> {
    await this.mutate(
      key,
      () => this.cold.delete(key, opts),
      async () => {
        // The map first (as in removeVersion): backup serves no version the map does not name, so should backup's
        // delete fail, the versions cold dropped are not listed or read from backup during a later outage.
        if (opts?.allVersions) await this.versions.forget(key).catch((error: unknown) => this.log?.warn({ err: error, key }, 'version map not dropped'));
        await this.backup.delete(key, forBackup(opts));
        this.access.forget(key);
      },
    );
  }

  /**
   * Version retention (the cleanup job): removes a version from cold and its copy from backup. Present when cold
   * can remove versions (not git). The current object does not change, so no hot copy is touched.
   */
  readonly deleteVersion?: (key: string, versionId: string) => Promise<void>;

  private async removeVersion(key: string, versionId: string): Promise<void> {
    validateKey(key);
    await this.cold.deleteVersion!(key, versionId);
    const backupId = await this.versions.backupIdOf(key, versionId).catch(() => undefined);
    if (backupId === undefined) return;
    // The map entry first: backup serves no version the map does not name, so should the copy's removal fail, the
    // version removed from cold is not listed or read from backup during a later outage (its bytes stay there).
    await this.versions.unlink(key, versionId, backupId).catch((error: unknown) => this.log?.warn({ err: error, key }, 'version map entry not dropped'));
    await this.backup.deleteVersion?.(key, backupId);
  }

  async presign(key: string, opts: { method: 'GET' | 'PUT'; expiresIn: number }): Promise<string> {
    if (opts.method !== 'GET') {
      throw new NotSupportedError(
        `hybrid store "${this.name}" takes uploads through the API only: an upload straight to the cold tier would bypass the backup tier and the hot-tier invalidation`,
      );
    }
    if (this.cold.presign === undefined || this.cold.capabilities.presign !== 'native') {
      throw new NotSupportedError(`hybrid store "${this.name}": its cold tier (${this.cold.kind}) has no presigned URLs`);
    }
    return this.cold.presign(key, opts);
  }

  // ---- tiering ----

  /** What every process's hot tier should do, from the read counts of all processes. */
  planTiering(limits?: PlanLimits): Promise<TieringPlan> {
    return this.access.plan(limits);
  }

  /**
   * Follows a plan in this process: drops the copies it demotes, copies from cold the objects it promotes that fit
   * the hot budget (`withinHotBudget`), and evicts none of those to make room for another.
   */
  async applyTiering(plan: TieringPlan): Promise<TieringOutcome> {
    const outcome: TieringOutcome = { promoted: 0, promotedBytes: 0, demoted: 0, demotedBytes: 0, skipped: 0 };
    for (const key of plan.demote) {
      if (!this.hot.has(key)) continue;
      outcome.demotedBytes += await this.hot.demote(key, 'plan');
      outcome.demoted++;
    }
    const keep: ReadonlySet<string> = new Set((await this.withinHotBudget(plan.promote)).keys());
    const queue = [...keep].filter((key) => !this.hot.has(key));
    const copied = new Map<string, number>();
    const promoteNext = async () => {
      for (let key = queue.shift(); key !== undefined; key = queue.shift()) {
        const bytes = await this.promote(key, keep);
        if (bytes !== undefined) copied.set(key, bytes);
      }
    };
    await Promise.all(Array.from({ length: Math.min(PROMOTE_WIDTH, queue.length) }, promoteNext));
    // Only copies still hot count: an admission of a read here may have evicted one since.
    for (const [key, bytes] of copied) {
      if (!this.hot.has(key)) continue;
      outcome.promoted++;
      outcome.promotedBytes += bytes;
    }
    outcome.skipped = plan.promote.length - outcome.promoted;
    return outcome;
  }

  /**
   * The plan's promotions that the hot budget holds, most read first, with their sizes: a hot copy's as held, other
   * keys' as cold states them (keys cold cannot describe, or too large to promote, are left out). It stops at the
   * first that does not fit; copies are at most `maxEntryBytes`, so little of the budget is left unused. Promoting
   * past the budget would evict the most read keys for the least read ones, and flip the hot set at every pass.
   */
  private async withinHotBudget(keys: readonly string[]): Promise<Map<string, number>> {
    const chosen = new Map<string, number>();
    let total = 0;
    for (let start = 0; start < keys.length; start += PROMOTE_WIDTH) {
      const batch = keys.slice(start, start + PROMOTE_WIDTH);
      const sizes = await Promise.all(batch.map((key) => this.hotSizeOf(key)));
      for (const [i, key] of batch.entries()) {
        const size = sizes[i];
        if (size === undefined) continue;
        if (total + size > this.hot.maxBytes) return chosen;
        total += size;
        chosen.set(key, size);
      }
    }
    return chosen;
  }

  /** What `key` counts against the hot budget: its hot copy's charge, else cold's object's; undefined if it cannot be promoted. */
  private async hotSizeOf(key: string): Promise<number | undefined> {
    const copy = this.hot.peek(key);
    if (copy !== undefined) return this.hot.charge(key, copy);
    try {
      const info = await this.cold.stat(key);
      return info.size <= this.hot.maxEntryBytes ? this.hot.charge(key, info) : undefined;
    } catch (error) {
      if (!(error instanceof StorageError)) throw error;
      return undefined;
    }
  }

  /** Hands the plan to every other process holding this store (each applies it on receipt). */
  async publishTiering(plan: TieringPlan): Promise<void> {
    await this.channel.publish({ type: 'plan', plan });
  }

  // ---- repair ----

  /**
   * The repair pass (the `tier` job runs it): every key whose backup or hot copies may lag cold — a follow-up step
   * that failed for good, mutations that overlapped, a process that died mid-mutation (after
   * `abandonedAfterMs`) — gets the versions backup lacks and cold's current state copied to backup, and its hot
   * copies dropped everywhere. A key leaves the ledger only once backup is seen equal to cold and no mutation of it
   * began meanwhile; `repaired` counts those keys (checked, and copied where they lagged).
   */
  async repairBackups({ abandonedAfterMs = ABANDONED_MUTATION_MS }: { abandonedAfterMs?: number } = {}): Promise<BackupRepairOutcome> {
    const entries = await this.pending.entries();
    const now = this.now();
    let repaired = 0;
    for (const entry of entries) {
      const due = entry.running <= 0 ? entry.needsRepair : now - entry.since >= abandonedAfterMs;
      if (!due) continue;
      try {
        if (await this.exclusively(entry.key, () => this.repair(entry))) repaired++;
      } catch (error) {
        this.log?.warn({ err: error, key: entry.key }, 'backup not repaired now: the next pass tries again');
      }
    }
    return { repaired, pending: entries.length - repaired };
  }

  /**
   * Whether the key was seen in line and left the ledger. Mutations in other processes may run meanwhile (the lock
   * here is per process): backup's current object is replaced or deleted only from the state this pass saw, and a
   * key a mutation may have overtaken is left pending for the next pass rather than overwritten.
   */
  private async repair(entry: PendingEntry): Promise<boolean> {
    const { key } = entry;
    // An abandoned mutation (still counted as running) may have reached cold and not backup: flagged before cold is
    // asked, as that fails while cold is down and backup's older copy must not be served then. Other entries (a
    // write cold refused: backup most likely still current) stay readable from backup until cold answers.
    const abandoned = entry.running > 0;
    if (abandoned) await this.pending.markBehind(key);
    const mapped = await this.versions.links(key); // before cold is listed: a version linked later may be missing there
    const coldVersions = await allVersions(this.cold, key);
    if (!abandoned) await this.pending.markBehind(key);
    await this.dropRemovedVersions(key, mapped, coldVersions);
    const linked = await this.copyMissingVersions(key, coldVersions);
    const cold = await statIfPresent(this.cold, key);
    const backup = await statIfPresent(this.backup, key);
    // Cold has nothing of the key: its version map goes with the entry, and only if no mutation began (it may link).
    const forgetVersions = cold === undefined && coldVersions.length === 0;
    if (!sameIfPresent(cold, backup)) {
      const done = cold === undefined ? await this.removeFromBackup(entry, forgetVersions) : await this.copyToBackup(entry, backup, linked);
      if (!done) return false;
    }
    await this.invalidate(key);
    // A mutation that ran beside this repair (another process) may have landed after it: settle only what is seen.
    if (!sameIfPresent(await statIfPresent(this.cold, key), await statIfPresent(this.backup, key))) return false;
    const settled = await this.pending.settle(entry, forgetVersions ? this.versions.hashKey(key) : undefined);
    if (settled) this.log?.info({ key }, 'backup checked against cold and in line');
    return settled;
  }

  /** Deletes backup's copy of a key cold has not, unless a mutation (maybe creating it anew) began since `entry`. */
  private async removeFromBackup(entry: PendingEntry, everything: boolean): Promise<boolean> {
    if (await this.pending.begunSince(entry)) return false;
    await this.backup.delete(entry.key, { allVersions: everything });
    return true;
  }

  /**
   * Copies cold's current object over `seen`, backup's state before cold was read: conditional on its etag, so a
   * newer copy landed since by another process's mutation stays. Over nothing, create-only (`ifNoneMatch`), and only
   * while no mutation began since `entry`. False: not copied.
   */
  private async copyToBackup(entry: PendingEntry, seen: ObjectInfo | undefined, linked: ReadonlySet<string>): Promise<boolean> {
    const { key } = entry;
    const { info, body } = await this.cold.read(key);
    if (seen === undefined && (await this.pending.begunSince(entry))) {
      body.destroy();
      return false;
    }
    const condition = seen === undefined ? { ifNoneMatch: '*' as const } : { ifMatch: seen.etag };
    const mirrored = { contentType: info.contentType, metadata: info.metadata, ...condition };
    try {
      // A current object that is one of the versions just linked is content only: no version of its own in backup.
      if (info.versionId === undefined || linked.has(info.versionId)) await this.backup.write(key, body, mirrored);
      else {
        const copy = await this.backup.createVersion(key, body, { ...mirrored, message: 'repair: copied from cold' });
        await this.linkCopy(key, info.versionId, copy.versionId);
      }
      return true;
    } catch (error) {
      body.destroy(); // a refused write may not have read it
      if (error instanceof PreconditionFailedError) return false;
      throw error;
    }
  }

  /**
   * Unlinks, then removes from backup, the copies of versions cold no longer has: a `delete(key, { allVersions })`
   * whose map step failed, or a copy linked by a mutation that another process's delete overtook. `mapped` was read
   * before cold was listed, so it names no version made since (linked only after cold took it).
   */
  private async dropRemovedVersions(key: string, mapped: ReadonlyMap<string, string>, coldVersions: readonly VersionInfo[]): Promise<void> {
    const kept = new Set(coldVersions.map((version) => version.versionId));
    for (const [coldId, backupId] of mapped) {
      if (kept.has(coldId) || !(await this.coldLacks(key, coldId))) continue;
      await this.versions.unlink(key, coldId, backupId);
      await this.backup.deleteVersion?.(key, backupId).catch((error: unknown) => {
        this.log?.warn({ err: error, key, backupId }, 'backup copy of a version cold removed not deleted (never listed or served)');
      });
    }
  }

  /**
   * Whether cold says it has no such version. A listing leaves out what it cannot read (a damaged disk record): backup's
   * copy is then the only good one, and is kept, as is any version cold cannot answer for now.
   */
  private async coldLacks(key: string, versionId: string): Promise<boolean> {
    return this.cold.stat(key, { versionId }).then(
      () => false,
      (error: unknown) => error instanceof NotFoundError,
    );
  }

  /**
   * Copies, oldest first, the versions of cold that backup has no copy of (their backup step failed). A backup
   * version that no map entry names but has the same content and message (its link was lost) is linked instead of
   * copied twice. Returns the cold ids that backup now holds a copy of.
   */
  private async copyMissingVersions(key: string, coldVersions: readonly VersionInfo[]): Promise<Set<string>> {
    const backupIds = await this.versions.backupIdsOf(
      key,
      coldVersions.map((version) => version.versionId),
    );
    const linked = new Set(coldVersions.filter((_, i) => backupIds[i] !== undefined).map((version) => version.versionId));
    if (linked.size === coldVersions.length) return linked;
    const unlinked = await this.unlinkedBackupVersions(key);
    for (let i = coldVersions.length - 1; i >= 0; i--) {
      if (backupIds[i] !== undefined) continue;
      const version = coldVersions[i]!;
      const ownMessage = version.message === undefined;
      const twin = unlinked.get(`${version.etag}\n${versionMessage(version)}`)?.pop();
      if (twin !== undefined) {
        await this.linkVersions(key, version.versionId, twin, ownMessage);
        linked.add(version.versionId);
        continue;
      }
      const { info, body } = await this.cold.read(key, { versionId: version.versionId });
      const copy = await this.backup.createVersion(key, body, {
        message: versionMessage(version),
        ...(version.author ? { author: version.author } : {}),
        contentType: info.contentType,
        metadata: info.metadata,
      });
      await this.linkCopy(key, version.versionId, copy.versionId, ownMessage);
      linked.add(version.versionId);
    }
    return linked;
  }

  /** Backup's versions of `key` that no map entry names, by content and message, oldest last. */
  private async unlinkedBackupVersions(key: string): Promise<Map<string, string[]>> {
    const versions = await allVersions(this.backup, key);
    const origins = await this.versions.originsOf(versions.map((version) => ({ key, backupId: version.versionId })));
    const byContent = new Map<string, string[]>();
    versions.forEach((version, i) => {
      if (origins[i] !== undefined) return;
      const id = `${version.etag}\n${version.message ?? ''}`;
      byContent.set(id, [...(byContent.get(id) ?? []), version.versionId]);
    });
    return byContent;
  }

  // ---- stats, health, close ----

  /** What interrupted writes left in each tier that keeps such leftovers (a disk's temp files, s3's staged uploads). */
  async removeLeftovers(olderThanMs: number): Promise<number> {
    const tiers = [this.hot.provider, this.cold, this.backup];
    const swept = await Promise.allSettled(tiers.map(async (tier) => (await tier.removeLeftovers?.(olderThanMs)) ?? 0));
    let removed = 0;
    for (const outcome of swept) {
      // A tier that is down keeps its leftovers for the next cleanup; the others are swept now.
      if (outcome.status === 'fulfilled') removed += outcome.value;
      else this.log?.warn({ err: outcome.reason }, 'leftovers of a tier not removed: the next cleanup tries again');
    }
    return removed;
  }

  async stats(): Promise<ProviderStats> {
    const [cold, backup] = await Promise.allSettled([this.cold.stats(), this.backup.stats()]);
    const source = cold.status === 'fulfilled' ? cold.value : backup.status === 'fulfilled' ? backup.value : undefined;
    if (source === undefined) {
      throw new ProviderUnavailableError(`hybrid store "${this.name}": neither cold nor backup can be counted`, {
        cause: (cold as PromiseRejectedResult).reason,
      });
    }
    const summary = (settled: PromiseSettledResult<ProviderStats>, kind: string) =>
      settled.status === 'fulfilled'
        ? { kind, objects: settled.value.objects, bytes: settled.value.bytes, versions: settled.value.versions }
        : { kind, error: message(settled.reason) };
    return {
      kind: this.kind,
      objects: source.objects,
      bytes: source.bytes,
      versions: source.versions,
      detail: {
        countedOn: cold.status === 'fulfilled' ? 'cold' : 'backup',
        tiers: {
          hot: { kind: this.hot.provider.kind, objects: this.hot.objects, bytes: this.hot.bytes, maxBytes: this.hot.maxBytes },
          cold: summary(cold, this.cold.kind),
          backup: summary(backup, this.backup.kind),
        },
        hot: { ...this.hot.counters, maxObjectBytes: this.hot.maxEntryBytes, ttlMs: this.hot.ttlMs, live: this.channel.live },
        served: { ...this.served },
        access: { ...this.access.counters, threshold: this.access.threshold },
      },
    };
  }

  async health(): Promise<HealthReport> {
    const started = performance.now();
    const check = (provider: StorageProvider) =>
      provider.health().catch((error: unknown): HealthReport => ({ status: 'down', detail: message(error), latencyMs: 0 }));
    const [cold, backup, hotHealth] = await Promise.all([check(this.cold), check(this.backup), check(this.hot.provider)]);
    const coldUp = cold.status !== 'down';
    const backupUp = backup.status !== 'down';
    // A hot tier that is down costs speed only: its reads go to cold. A degraded one is a full cache, its usual state.
    const allOk = cold.status === 'ok' && backup.status === 'ok' && hotHealth.status !== 'down' && this.channel.live;
    const status: HealthReport['status'] = !coldUp && !backupUp ? 'down' : allOk ? 'ok' : 'degraded';
    const consequence = !coldUp && backupUp ? ' (reads served from backup, writes fail)' : coldUp && !backupUp ? ' (writes fail)' : '';
    const hotState = hotHealth.status === 'down' ? `, down: ${hotHealth.detail} (reads served from cold)` : '';
    const hot = `hot (${this.hot.provider.kind}): ${this.hot.objects} objects, ${this.hot.bytes} of ${this.hot.maxBytes} bytes${hotState}${this.channel.live ? '' : ', off: invalidation channel down'}`;
    return {
      status,
      detail: `cold (${this.cold.kind}): ${cold.status}, ${cold.detail}; backup (${this.backup.kind}): ${backup.status}, ${backup.detail}; ${hot}${consequence}`,
      latencyMs: performance.now() - started,
    };
  }

  /** Closes the tiers too (the hybrid owns them). Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.sweeper) clearInterval(this.sweeper);
      await this.unsubscribe?.().catch((error: unknown) => this.log?.warn({ err: error }, 'hot channel not closed cleanly'));
      await this.access.close();
      await this.hot.clear();
      await Promise.allSettled([this.hot.provider.close(), this.cold.close(), this.backup.close()]);
    })();
    return this.closing;
  }

  // ---- internals ----

  private onMessage(message: HotMessage): void {
    switch (message.type) {
      case 'invalidate':
        for (const key of message.keys) this.hot.invalidate(key);
        return;
      case 'reset':
        this.hot.reset();
        return;
      case 'plan':
        this.applyTiering(message.plan).then(
          (outcome) => this.log?.info({ ...outcome }, 'tiering plan applied'),
          (error: unknown) => this.log?.warn({ err: error }, 'tiering plan not applied'),
        );
    }
  }

  /** Cold's answer, or backup's when cold cannot answer now. */
  private async degrading<T>(fromCold: () => Promise<T>, fromBackup: (coldError: ProviderUnavailableError) => Promise<T>): Promise<{ tier: 'cold' | 'backup'; value: T }> {
    try {
      return { tier: 'cold', value: await fromCold() };
    } catch (coldError) {
      if (!isUnavailable(coldError)) throw coldError;
      try {
        return { tier: 'backup', value: await fromBackup(coldError) };
      } catch (backupError) {
        if (backupError === coldError || !isUnavailable(backupError)) throw backupError;
        throw new ProviderUnavailableError(
          `hybrid store "${this.name}": cold (${message(coldError)}) and backup (${message(backupError)}) are both unavailable`,
          { cause: backupError },
        );
      }
    }
  }

  /**
   * Backup's answer about `key` while cold is unavailable, unless it may be wrong: those keep cold's error. That is,
   * about a key the pending ledger flags as behind in backup (asked first, so that no body is opened in vain),
   * backup's "not found" of a key in the ledger at all (cold may hold it, backup lagging), and anything while the
   * ledger cannot be asked.
   */
  private async fromBackup<T>(key: string, coldError: ProviderUnavailableError, ask: () => Promise<T>): Promise<T> {
    const ledger = await this.pending.standing(key).catch(() => undefined);
    if (ledger === undefined || ledger.backupBehind) throw coldError;
    try {
      return await ask();
    } catch (error) {
      if (error instanceof NotFoundError && ledger.pending) throw coldError;
      throw error;
    }
  }

  /**
   * Whether a page backup listed may be wrong about a key the ledger flags as behind in backup (listed with older
   * content, listed though cold deleted it, or missing though cold holds it): one with the listing's prefix up to the
   * page's last item, or anywhere on a last page. Keys before the page's first item count too, as only backup can
   * read where its cursor starts. True while the ledger cannot be asked.
   */
  /** Backup's page in cold's place during an outage; cold's error when backup misses a write on that page. */
  private async backupListing(opts: ListOptions | undefined, coldError: ProviderUnavailableError): Promise<Page<ObjectInfo>> {
    const page = await this.backup.list(opts);
    if (await this.coversKeyBehind(page, opts?.prefix)) throw coldError;
    return page;
  }

  private async coversKeyBehind(page: Page<ObjectInfo>, prefix = ''): Promise<boolean> {
    const entries = await this.pending.entries().catch(() => undefined);
    if (entries === undefined) return true;
    const end = page.cursor === undefined ? undefined : page.items.at(-1)?.key;
    return entries.some(
      (entry) => entry.backupBehind && entry.key.startsWith(prefix) && (end === undefined || compareKeys(entry.key, end) <= 0),
    );
  }

  /**
   * A page of backup's versions of `key` in cold's id space, cursors included: the caller's cursor names a cold
   * version (the one it continues after) and so does the one returned, so paging goes on across the start and the
   * end of an outage. A position the version map cannot translate keeps cold's error: backup would start elsewhere.
   * Versions without a cold id are left out; the page then ends at its last version that has one.
   */
  private async backupVersions(key: string, opts: { cursor?: string; limit?: number } | undefined, coldError: ProviderUnavailableError): Promise<Page<VersionInfo>> {
    const after = await this.backupVersionId(key, decodeVersionsCursor(key, opts?.cursor), coldError);
    const page = await this.backup.listVersions(key, { limit: opts?.limit, cursor: after === undefined ? undefined : encodeVersionsCursor(key, after) });
    // Backup's cursor names the last version it read, which a page may omit (disk skips one it cannot read).
    const end = decodeVersionsCursor(key, page.cursor);
    const backupIds = [...page.items.map((version) => version.versionId), ...(end === undefined ? [] : [end])];
    const origins = await this.versions.originsOf(backupIds.map((backupId) => ({ key, backupId }))).catch(() => {
      throw coldError; // without the map every version would be left out: an empty page that claims more
    });
    const items = page.items.flatMap((version, i) => (origins[i] === undefined ? [] : [asColdVersion(version, origins[i])]));
    if (end === undefined) return { items };
    const last = origins.at(-1)?.coldId ?? items.at(-1)?.versionId;
    if (last === undefined) throw coldError;
    return { items, cursor: encodeVersionsCursor(key, last) };
  }

  /** The backup's id for a cold version id; a version the backup cannot be trusted to hold keeps cold's error. */
  private async backupVersionId(key: string, versionId: string | undefined, coldError: ProviderUnavailableError): Promise<string | undefined> {
    if (versionId === undefined) return undefined;
    const backupId = await this.versions.backupIdOf(key, versionId).catch(() => undefined);
    if (backupId === undefined) throw coldError;
    return backupId;
  }

  private async asColdObject(info: ObjectInfo, coldVersionId: string | undefined): Promise<ObjectInfo> {
    if (coldVersionId !== undefined) return { ...info, versionId: coldVersionId };
    return (await this.asColdIds([info]))[0]!;
  }

  /** Current backup objects with cold's version ids; those without a known cold id lose it. */
  private async asColdIds<T extends { key: string; versionId?: string }>(items: T[]): Promise<T[]> {
    const versioned = items.filter((item) => item.versionId !== undefined);
    const coldIds = await this.versions
      .coldIdsNaming(versioned.map((item) => ({ key: item.key, backupId: item.versionId! })))
      .catch(() => versioned.map(() => undefined));
    const byItem = new Map(versioned.map((item, i) => [item, coldIds[i]]));
    return items.map((item) => {
      if (item.versionId === undefined) return item;
      const coldId = byItem.get(item);
      if (coldId !== undefined) return { ...item, versionId: coldId };
      const { versionId: _unknown, ...rest } = item;
      return rest as T;
    });
  }

  /** Small bodies in memory (sent to both tiers); a longer stream as a stream (backup reads it back from cold). */
  private async stage(body: Body): Promise<Body> {
    if (!isReadable(body)) return body;
    const { head, rest } = await readAhead(body, this.bufferLimit);
    return rest ?? head;
  }

  private async coldBody(key: string, versionId: string | undefined): Promise<Readable> {
    return (await this.cold.read(key, versionId === undefined ? undefined : { versionId })).body;
  }

  /**
   * Whether backup's `backupId` stands for cold's `coldId` now (false: another copy was linked first); undefined when
   * the map could not be written.
   */
  private async linkVersions(key: string, coldId: string, backupId: string, ownMessage = false): Promise<boolean | undefined> {
    return this.versions.link(key, coldId, backupId, ownMessage).catch((error: unknown) => {
      this.log?.warn({ err: error, key, coldId, backupId }, 'version map not written: this version cannot be read from backup during a cold outage');
      return undefined;
    });
  }

  /**
   * Links the copy backup just made of cold's version `coldId`. Should another process have linked a copy of its own
   * first (two repair passes, or a repair beside the mutation that made the version), this one goes: it would be a
   * second copy of the version in backup.
   */
  private async linkCopy(key: string, coldId: string, copyId: string, ownMessage = false): Promise<void> {
    if ((await this.linkVersions(key, coldId, copyId, ownMessage)) !== false) return;
    // An every-write backup's newest version is its current object, never removed: the copy stays there, unlisted.
    if (this.backup.capabilities.versioning !== 'explicit') return;
    await this.backup.deleteVersion?.(key, copyId).catch((error: unknown) => {
      this.log?.warn({ err: error, key, backupId: copyId }, 'second backup copy of a version not deleted (never listed or served)');
    });
  }

  /**
   * One mutation of `key`: cold, then backup, then the invalidation everywhere, noted in the pending ledger from
   * before cold to after the invalidation (`hybrid-pending.ts`). A cold refusal (not found, precondition...)
   * changed nothing; an unavailable cold may have taken the request, and a failed backup follows a changed cold:
   * both invalidate too, and leave the key to the repair pass (the latter flagged as behind in backup).
   */
  private async mutate<T>(key: string, toCold: () => Promise<T>, toBackup: (result: T) => Promise<void>): Promise<T> {
    validateKey(key);
    return this.exclusively(key, async () => {
      await this.pending.begin(key, this.now()).catch((error: unknown) => {
        throw new ProviderUnavailableError(`hybrid store "${this.name}": cannot note the mutation of "${key}" in Redis`, { cause: error });
      });
      let ended: MutationEnd = 'check';
      try {
        let result: T;
        try {
          result = await toCold();
        } catch (error) {
          // A refusal (not found, precondition failed, the fence...) changed nothing; an unavailable cold may have taken it.
          if ((error instanceof StorageError && !isUnavailable(error)) || isFenceError(error)) ended = 'in-line';
          if (isUnavailable(error)) await this.invalidate(key).catch(() => undefined);
          throw error;
        }
        try {
          await followUp(() => toBackup(result));
        } catch (error) {
          ended = 'backup-behind';
          await this.invalidate(key).catch(() => undefined);
          if (isUnavailable(error)) throw error;
          throw new ProviderUnavailableError(`hybrid store "${this.name}": "${key}" is in cold, but the backup tier failed: ${message(error)}`, {
            cause: error,
          });
        }
        await followUp(() => this.invalidate(key));
        ended = 'in-line';
        return result;
      } finally {
        // Not waited for: Redis runs it before anything this process sends later, and should it never run (a crash,
        // Redis gone), the entry stays and the repair pass checks the key — only a needless check.
        this.pending.end(key, ended, this.now()).catch((error: unknown) => {
          this.log?.warn({ err: error, key }, 'mutation not noted as ended: the repair pass will check this key');
        });
      }
    });
  }

  /** Mutations and repairs of one key in this process, one at a time: cold and backup see them in one order. */
  private exclusively<T>(key: string, run: () => Promise<T>): Promise<T> {
    return withProcessMutex(`hybrid:${this.id}:${key}`, run);
  }

  private async invalidate(key: string): Promise<void> {
    this.hot.invalidate(key);
    try {
      await this.channel.publish({ type: 'invalidate', keys: [key] });
    } catch (error) {
      throw new ProviderUnavailableError(`hybrid store "${this.name}": the invalidation of "${key}" could not be published`, { cause: error });
    }
  }

  /** Copies `key` from cold into the hot tier, evicting none of `keep`; its size, or undefined when not promoted. */
  private async promote(key: string, keep: ReadonlySet<string>): Promise<number | undefined> {
    if (!this.channel.live) return undefined;
    const mark = this.hot.mark();
    try {
      const { info, body } = await this.cold.read(key);
      if (info.size > this.hot.maxEntryBytes) {
        body.destroy();
        return undefined;
      }
      const admitted = await this.hot.admit(key, info, await readAll(body), mark, keep);
      return admitted ? info.size : undefined;
    } catch (error) {
      if (!(error instanceof StorageError)) throw error;
      this.log?.debug({ err: error, key }, 'not promoted');
      return undefined;
    }
  }
}

export async function createHybridProvider(options: HybridProviderOptions): Promise<HybridProvider> {
  const provider = new HybridProvider(options);
  try {
    await provider.start();
  } catch (error) {
    await provider.close().catch(() => undefined);
    throw error;
  }
  return provider;
}

/** Whether a store (possibly behind the metrics layer) can be driven by the `tier` job. */
export function isHybridProvider(provider: StorageProvider): provider is HybridProvider {
  return provider.kind === 'hybrid' && typeof (provider as Partial<HybridProvider>).planTiering === 'function';
}
