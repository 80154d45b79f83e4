/**
 * Which backup version stands for which cold version. Each tier names versions itself (s3 by its VersionId or
 * its own ids, disk by its own), so the backup's copy of a version carries another id than the cold one callers
 * know. While cold is down, hybrid reads versions from the backup through this map and lists the backup's
 * versions under their cold ids; a version the map does not know is not served from the backup at all.
 *
 * One Redis hash per key, `<prefix>:hybrid:<store>:versions:<key>`: `c:<cold id>` -> backup id and
 * `b:<backup id>` -> cold id, and `m:<backup id>` when the copy's message is hybrid's own (cold's version has none;
 * backup needs one). A version removed by retention leaves `n:<backup id>` -> cold id: the current object goes on
 * naming the version it came from (the contract's `deleteVersion` keeps it), on cold and so on backup. Written when a version is made (best effort: a lost entry only makes that version
 * unreadable during a cold outage), dropped with the version (`deleteVersion`) or with all of them
 * (`delete(key, { allVersions: true })`), and by the repair pass for versions cold no longer has.
 */
import type { Cluster, Redis } from 'ioredis';

/**
 * Links a cold version to its backup copy unless a copy of it is linked already: two processes can copy one version
 * at once (two repair passes, or a repair beside the mutation that made it). 1 when `backupId` stands for it now.
 */
const LINK = `
local h, cold, backup = KEYS[1], ARGV[1], ARGV[2]
local linked = redis.call('HGET', h, 'c:' .. cold)
if linked then return linked == backup and 1 or 0 end
redis.call('HSET', h, 'c:' .. cold, backup, 'b:' .. backup, cold)
if ARGV[3] == '1' then redis.call('HSET', h, 'm:' .. backup, 1) end
return 1`;

/**
 * The cold version a backup copy stands for, and whether its message is hybrid's own; none unless the map names the
 * copy back for that version (maps linked before `LINK` refused a second copy may hold its `b:` still).
 */
const ORIGIN = `
local h, backup = KEYS[1], ARGV[1]
local cold = redis.call('HGET', h, 'b:' .. backup)
if not cold or redis.call('HGET', h, 'c:' .. cold) ~= backup then return false end
return {cold, redis.call('HEXISTS', h, 'm:' .. backup)}`;

/** The cold id a current backup object's version id stands for: its version's, or the removed version's (`n:`). */
const NAMED = `
local h, backup = KEYS[1], ARGV[1]
local cold = redis.call('HGET', h, 'b:' .. backup)
if cold and redis.call('HGET', h, 'c:' .. cold) == backup then return cold end
return redis.call('HGET', h, 'n:' .. backup)`;

/** What the map says of a backup version. */
export interface ColdOrigin {
  /** The cold version it is a copy of. */
  coldId: string;
  /** Its message is hybrid's own (backup needs one): cold's version has none. */
  ownMessage: boolean;
}

export class VersionMap {
  constructor(
    private readonly redis: Redis | Cluster,
    /** `<prefix>:hybrid:<store>`. */
    private readonly namespace: string,
  ) {}

  /** Whether `backupId` stands for `coldId` now; false when another copy was linked to it first. */
  async link(key: string, coldId: string, backupId: string, ownMessage: boolean): Promise<boolean> {
    return (await this.redis.eval(LINK, 1, this.hashKey(key), coldId, backupId, ownMessage ? '1' : '0')) === 1;
  }

  /** Every cold version of `key` the map names a copy of, with the copy's id. */
  async links(key: string): Promise<Map<string, string>> {
    const fields = Object.entries(await this.redis.hgetall(this.hashKey(key)));
    return new Map(fields.filter(([field]) => field.startsWith('c:')).map(([field, backupId]) => [field.slice(2), backupId]));
  }

  async backupIdOf(key: string, coldId: string): Promise<string | undefined> {
    return (await this.redis.hget(this.hashKey(key), `c:${coldId}`)) ?? undefined;
  }

  /** The backup ids of cold versions of `key`, in order (`undefined` where unknown). One round trip. */
  async backupIdsOf(key: string, coldIds: readonly string[]): Promise<(string | undefined)[]> {
    if (coldIds.length === 0) return [];
    const values = await this.redis.hmget(this.hashKey(key), ...coldIds.map((id) => `c:${id}`));
    return values.map((value) => value ?? undefined);
  }

  /** The origins of backup versions, in order (`undefined` where unknown). One round trip. */
  async originsOf(entries: readonly { key: string; backupId: string }[]): Promise<(ColdOrigin | undefined)[]> {
    return (await this.perBackupId(ORIGIN, entries)).map((value) => {
      if (!Array.isArray(value)) return undefined;
      const [coldId, ownMessage] = value as [string, number];
      return { coldId, ownMessage: ownMessage === 1 };
    });
  }

  /**
   * The cold ids that current backup objects' version ids stand for (undefined where none): a removed version's
   * too, unlike `originsOf`, since a current object still names the version it was made as. One round trip.
   */
  async coldIdsNaming(entries: readonly { key: string; backupId: string }[]): Promise<(string | undefined)[]> {
    return (await this.perBackupId(NAMED, entries)).map((value) => (typeof value === 'string' ? value : undefined));
  }

  /** `script` run for each (key, backup id) in one pipeline: its answers in order, undefined where it failed. */
  private async perBackupId(script: string, entries: readonly { key: string; backupId: string }[]): Promise<unknown[]> {
    if (entries.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const { key, backupId } of entries) pipeline.eval(script, 1, this.hashKey(key), backupId);
    const results = (await pipeline.exec()) ?? [];
    return entries.map((_, i) => {
      const [error, value] = results[i] ?? [null, null];
      return error === null ? value : undefined;
    });
  }

  /** Drops a removed version from the map, keeping the name a current object made as that version goes by. */
  async unlink(key: string, coldId: string, backupId: string): Promise<void> {
    const hash = this.hashKey(key);
    await this.redis.multi().hdel(hash, `c:${coldId}`, `b:${backupId}`, `m:${backupId}`).hset(hash, `n:${backupId}`, coldId).exec();
  }

  async forget(key: string): Promise<void> {
    await this.redis.del(this.hashKey(key));
  }

  /** The Redis key of `key`'s map (the repair pass drops it in one step with the key's pending entry). */
  hashKey(key: string): string {
    return `${this.namespace}:versions:${key}`;
  }
}
