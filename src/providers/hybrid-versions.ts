/**
 * Which backup version stands for which cold version. Each tier names versions itself (s3 by its VersionId or
 * its own ids, disk by its own), so the backup's copy of a version carries another id than the cold one callers
 * know. While cold is down, hybrid reads versions from the backup through this map and lists the backup's
 * versions under their cold ids; a version the map does not know is not served from the backup at all.
 *
 * One Redis hash per key, `<prefix>:hybrid:<store>:versions:<key>`: `c:<cold id>` -> backup id and
 * `b:<backup id>` -> cold id. Written when a version is made (best effort: a lost entry only makes that version
 * unreadable during a cold outage), dropped with the version (`deleteVersion`) or with all of them
 * (`delete(key, { allVersions: true })`).
 */
import type { Cluster, Redis } from 'ioredis';

export class VersionMap {
  constructor(
    private readonly redis: Redis | Cluster,
    /** `<prefix>:hybrid:<store>`. */
    private readonly namespace: string,
  ) {}

  async link(key: string, coldId: string, backupId: string): Promise<void> {
    await this.redis.hset(this.hashKey(key), `c:${coldId}`, backupId, `b:${backupId}`, coldId);
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

  /** The cold ids of backup versions, in order (`undefined` where unknown). One round trip. */
  async coldIdsOf(entries: readonly { key: string; backupId: string }[]): Promise<(string | undefined)[]> {
    if (entries.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const { key, backupId } of entries) pipeline.hget(this.hashKey(key), `b:${backupId}`);
    const results = (await pipeline.exec()) ?? [];
    return entries.map((_, i) => {
      const [error, value] = results[i] ?? [null, null];
      return error === null && typeof value === 'string' ? value : undefined;
    });
  }

  async unlink(key: string, coldId: string, backupId: string): Promise<void> {
    await this.redis.hdel(this.hashKey(key), `c:${coldId}`, `b:${backupId}`);
  }

  async forget(key: string): Promise<void> {
    await this.redis.del(this.hashKey(key));
  }

  /** The Redis key of `key`'s map (the repair pass drops it in one step with the key's pending entry). */
  hashKey(key: string): string {
    return `${this.namespace}:versions:${key}`;
  }
}
