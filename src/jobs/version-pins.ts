/**
 * Versions a job still to run will read, so that version retention (cleanup) keeps them: a restore accepted with 202
 * whose version a later write pushed past `VERSION_RETENTION_COUNT` would otherwise fail for good with NOT_FOUND
 * (as would a copy of a named source version). One Redis hash, `<prefix>:versions:pinned`: store, key and version id
 * -> job id, written before the job is added (`enqueue`); cleanup drops the pins whose job no longer needs them.
 */
import type { RedisConnection } from '../redis.js';

export interface PinnedVersion {
  store: string;
  key: string;
  versionId: string;
}

/** Store names and version ids hold no newline; keys may, so the key goes last and takes the rest. */
function fieldOf({ store, key, versionId }: PinnedVersion): string {
  return `${store}\n${versionId}\n${key}`;
}

export class VersionPins {
  private readonly hashKey: string;

  constructor(
    private readonly redis: RedisConnection,
    prefix: string,
  ) {
    this.hashKey = `${prefix}:versions:pinned`;
  }

  async pin(version: PinnedVersion, jobId: string): Promise<void> {
    await this.redis.hset(this.hashKey, fieldOf(version), jobId);
  }

  async pinnedBy(version: PinnedVersion): Promise<string | undefined> {
    return (await this.redis.hget(this.hashKey, fieldOf(version))) ?? undefined;
  }

  /** Drops every pin whose job `stillNeeds` says no longer needs its version. */
  async sweep(stillNeeds: (jobId: string) => Promise<boolean>): Promise<void> {
    let cursor = '0';
    do {
      const [next, entries] = await this.redis.hscan(this.hashKey, cursor, 'COUNT', 500);
      cursor = next;
      for (let i = 0; i + 1 < entries.length; i += 2) {
        const [field, jobId] = [entries[i]!, entries[i + 1]!];
        if (await stillNeeds(jobId)) continue;
        // Only if still this job's: a newer job may have pinned the same version meanwhile.
        await this.redis.eval(DROP_IF_SCRIPT, 1, this.hashKey, field, jobId);
      }
    } while (cursor !== '0');
  }
}

const DROP_IF_SCRIPT = `
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
`;
