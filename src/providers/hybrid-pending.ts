/**
 * Which keys of a hybrid store may have a backup tier (or other processes' hot copies) behind cold: a ledger in
 * Redis, shared by every process, that the `tier` job's repair pass works through (`HybridProvider.repairBackups`).
 *
 * A mutation `begin`s before it touches cold and `end`s after its backup copy and invalidation, saying whether
 * they went through. A key leaves the ledger when its last mutation ended well and no two of its mutations
 * overlapped. It stays when a follow-up step failed for good, when mutations overlapped (two processes can land
 * their backup copies in the opposite order of their cold writes), and when a process died in between (its
 * mutation never ends): the repair pass then copies cold's state to backup and removes the entry only if no
 * mutation of the key began in the meantime. A mutation that runs longer than the repair's patience may see its
 * entry settled under it: it then finds its count below zero when it ends, and puts the key back for repair (it
 * may have overlapped others, unseen).
 *
 * Among those, the keys whose backup copy is known to be behind cold (cold took a mutation that backup did not
 * follow, or mutations overlapped) are flagged until their repair: while cold is down, backup's answer about them
 * may be an older content or an object cold deleted, so reads do not take it. A key whose mutation may or may not
 * have reached cold (cold unavailable) is only checked: backup's copy is most likely still the current one.
 *
 * One Redis hash, `<prefix>:hybrid:<store>:pending`, five fields per key: `c:<key>` mutations begun and not ended,
 * `g:<key>` the number of the last mutation begun (from the store-wide sequence `#`, so it never repeats), `t:<key>`
 * (ms) when the running mutations began (the count last rose from zero; with none running, when the key entered the
 * ledger), `x:<key>` present when the key needs a repair whatever the count says, `b:<key>` present when backup is
 * behind cold for the key (never without `x:<key>`).
 */
import type { Cluster, Redis } from 'ioredis';

const BEGIN = `
local h, k = KEYS[1], ARGV[1]
local running = redis.call('HINCRBY', h, 'c:' .. k, 1)
redis.call('HSET', h, 'g:' .. k, redis.call('HINCRBY', h, '#', 1))
-- A key pending for long must not make the mutation beginning now look abandoned.
if running == 1 then redis.call('HSET', h, 't:' .. k, ARGV[2]) else redis.call('HSETNX', h, 't:' .. k, ARGV[2]) end
if running > 1 then redis.call('HSET', h, 'x:' .. k, 1, 'b:' .. k, 1) end
return running`;

const END = `
local h, k, ended = KEYS[1], ARGV[1], ARGV[2]
local running = redis.call('HINCRBY', h, 'c:' .. k, -1)
if ended ~= 'in-line' or running < 0 then
  redis.call('HSET', h, 'x:' .. k, 1)
  redis.call('HSETNX', h, 't:' .. k, ARGV[3])
  if running < 0 then redis.call('HSET', h, 'g:' .. k, redis.call('HINCRBY', h, '#', 1)) end
end
if ended == 'backup-behind' or running < 0 then redis.call('HSET', h, 'b:' .. k, 1) end
if running <= 0 then
  if redis.call('HEXISTS', h, 'x:' .. k) == 0 then
    redis.call('HDEL', h, 'c:' .. k, 'g:' .. k, 't:' .. k)
  else
    redis.call('HSET', h, 'c:' .. k, 0)
  end
end
return running`;

/** Flags a key still in the ledger as behind (see `markBehind`). */
const MARK_BEHIND = `
local h, k = KEYS[1], ARGV[1]
if redis.call('HEXISTS', h, 't:' .. k) == 1 then redis.call('HSET', h, 'x:' .. k, 1, 'b:' .. k, 1) end`;

/**
 * Removes a repaired key's entry, and KEYS[2] when given, unless a mutation began since the repair read it
 * (generation ARGV[2]).
 */
const SETTLE = `
local h, k = KEYS[1], ARGV[1]
if (redis.call('HGET', h, 'g:' .. k) or '') ~= ARGV[2] then return 0 end
redis.call('HDEL', h, 'c:' .. k, 'g:' .. k, 't:' .. k, 'x:' .. k, 'b:' .. k)
if KEYS[2] then redis.call('DEL', KEYS[2]) end
return 1`;

export interface PendingEntry {
  key: string;
  /** Mutations begun and not ended (a process that died mid-mutation leaves its one here for good). */
  running: number;
  /** Changes whenever a mutation of the key begins, never to an earlier value: `settle` compares it. */
  generation: string;
  /** When the mutations running now began (with none running, when the key entered the ledger). */
  since: number;
  /** A follow-up failed or mutations overlapped: due for repair as soon as none runs. */
  needsRepair: boolean;
  /** Backup's copy is known to be behind cold: not to be served while cold is down. */
  backupBehind: boolean;
}

/**
 * How a mutation ended: `in-line` (backup and every hot copy follow cold, or cold refused it and nothing changed),
 * `check` (cold may have taken it or not, or only the invalidation failed: a repair checks the key), `backup-behind`
 * (cold took it and backup did not follow).
 */
export type MutationEnd = 'in-line' | 'check' | 'backup-behind';

export class PendingBackups {
  private readonly hashKey: string;

  constructor(
    private readonly redis: Redis | Cluster,
    /** `<prefix>:hybrid:<store>`. */
    namespace: string,
  ) {
    this.hashKey = `${namespace}:pending`;
  }

  async begin(key: string, now: number): Promise<void> {
    await this.redis.eval(BEGIN, 1, this.hashKey, key, String(now));
  }

  async end(key: string, ended: MutationEnd, now: number): Promise<void> {
    await this.redis.eval(END, 1, this.hashKey, key, ended, String(now));
  }

  /**
   * Flags `key` as behind before a repair writes to backup: on the way, backup may hold an older state than it had
   * (a missing older version copied in moves its current object back until cold's is copied), and should the repair
   * stop there (cold down), reads must not take backup's answer. A repair that settles the key clears it.
   */
  async markBehind(key: string): Promise<void> {
    await this.redis.eval(MARK_BEHIND, 1, this.hashKey, key);
  }

  /** Every key in the ledger. */
  async entries(): Promise<PendingEntry[]> {
    const fields = new Map<string, string>();
    let cursor = '0';
    do {
      const [next, flat] = await this.redis.hscan(this.hashKey, cursor, 'COUNT', 1000);
      for (let i = 0; i < flat.length; i += 2) fields.set(flat[i]!, flat[i + 1]!);
      cursor = next;
    } while (cursor !== '0');
    const entries: PendingEntry[] = [];
    for (const [field, since] of fields) {
      if (!field.startsWith('t:')) continue;
      const key = field.slice(2);
      entries.push({
        key,
        running: Number(fields.get(`c:${key}`) ?? 0),
        generation: fields.get(`g:${key}`) ?? '',
        since: Number(since),
        needsRepair: fields.has(`x:${key}`),
        backupBehind: fields.has(`b:${key}`),
      });
    }
    return entries;
  }

  /** Whether `key` is in the ledger (its backup copy may lag cold), and whether backup is known to be behind for it. */
  async standing(key: string): Promise<{ pending: boolean; backupBehind: boolean }> {
    const [since, behind] = await this.redis.hmget(this.hashKey, `t:${key}`, `b:${key}`);
    return { pending: since !== null, backupBehind: behind !== null };
  }

  /** Whether a mutation of the key began after `entry` was read (or the entry is gone). */
  async begunSince(entry: PendingEntry): Promise<boolean> {
    return ((await this.redis.hget(this.hashKey, `g:${entry.key}`)) ?? '') !== entry.generation;
  }

  /**
   * Whether the entry was removed (false: a mutation began after `entry` was read, and it stays). `alsoDrop`, a Redis
   * key in the same hash slot, goes in the same step, only if the entry does.
   */
  async settle(entry: PendingEntry, alsoDrop?: string): Promise<boolean> {
    const keys = alsoDrop === undefined ? [this.hashKey] : [this.hashKey, alsoDrop];
    return (await this.redis.eval(SETTLE, keys.length, ...keys, entry.key, entry.generation)) === 1;
  }
}
