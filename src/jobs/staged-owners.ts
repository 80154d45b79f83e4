/**
 * Which job a staged body belongs to, so that cleanup never removes the body of a job that is still to run — one
 * waiting in a backlog longer than `STAGING_TTL`, or failed and waiting for a retry from the board. One Redis hash,
 * `<prefix>:staging:owners`: staged key -> job id, written before the job is added (`enqueue`) and dropped when the
 * body is released. A body with no owner is one whose job never got added (a crash, a refused enqueue).
 */
import type { RedisConnection } from '../redis.js';

export class StagedOwners {
  private readonly hashKey: string;

  constructor(
    private readonly redis: RedisConnection,
    prefix: string,
  ) {
    this.hashKey = `${prefix}:staging:owners`;
  }

  async note(stagedKey: string, jobId: string): Promise<void> {
    await this.redis.hset(this.hashKey, stagedKey, jobId);
  }

  async forget(stagedKey: string): Promise<void> {
    await this.redis.hdel(this.hashKey, stagedKey);
  }

  async ownerOf(stagedKey: string): Promise<string | undefined> {
    return (await this.redis.hget(this.hashKey, stagedKey)) ?? undefined;
  }
}
