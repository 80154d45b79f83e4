/**
 * Commits to one repository happen one at a time. Inside a process: a mutex per repository (keyed by its real
 * path, so two providers on one repository share it). Across processes (`GIT_LOCK=redis`, several workers on a
 * shared volume): a Redis lease on top, `SET key token NX PX lease`, renewed every third of the lease while held
 * and released by a compare-and-delete script, so a crashed holder blocks the others for one lease at most and a
 * slow one never deletes a successor's lock.
 *
 * A lease can still be lost (a pause longer than the lease); the branch update itself is a compare-and-swap on
 * the ref (see `ObjectStore.updateRef`), so a holder that lost its lease fails that swap instead of overwriting
 * another worker's commit.
 */
import { randomBytes } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import { ProviderUnavailableError } from './errors.js';
import { withProcessMutex } from './process-mutex.js';

export interface Lease {
  /** Throws when the lease was lost while held (never for the in-process mutex alone). */
  assertHeld(): void;
}

export interface RepoLock {
  run<T>(fn: (lease: Lease) => Promise<T>): Promise<T>;
}

const RENEW = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end`;
const RELEASE = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end`;

export interface RedisLockOptions {
  redis: Redis | Cluster;
  key: string;
  /** Default 15 s. */
  leaseMs?: number;
  /** How long to wait for another worker's lease before giving up with `ProviderUnavailableError`. Default 30 s. */
  acquireTimeoutMs?: number;
}

class RedisLease implements Lease {
  private lost = false;
  private renewedAt = Date.now();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly options: Required<RedisLockOptions>,
    private readonly token: string,
  ) {
    this.timer = setInterval(() => void this.renew(), Math.max(10, Math.floor(options.leaseMs / 3)));
    this.timer.unref();
  }

  private async renew(): Promise<void> {
    if (this.lost) return;
    try {
      const renewed = await this.options.redis.eval(RENEW, 1, this.options.key, this.token, this.options.leaseMs);
      if (renewed === 1) this.renewedAt = Date.now();
      else this.markLost();
    } catch {
      // Redis unreachable: the lease runs out on its own; past that point it is lost.
      if (Date.now() - this.renewedAt >= this.options.leaseMs) this.markLost();
    }
  }

  private markLost(): void {
    this.lost = true;
    clearInterval(this.timer);
  }

  assertHeld(): void {
    if (this.lost || Date.now() - this.renewedAt >= this.options.leaseMs) {
      throw new ProviderUnavailableError('the git repository lock (Redis lease) was lost before the commit');
    }
  }

  async release(): Promise<void> {
    clearInterval(this.timer);
    await this.options.redis.eval(RELEASE, 1, this.options.key, this.token).catch(() => {});
  }
}

async function acquireRedisLease(options: Required<RedisLockOptions>): Promise<RedisLease> {
  const token = randomBytes(16).toString('hex');
  const deadline = Date.now() + options.acquireTimeoutMs;
  let wait = 2;
  for (;;) {
    let acquired: string | null;
    try {
      acquired = await options.redis.set(options.key, token, 'PX', options.leaseMs, 'NX');
    } catch (error) {
      throw new ProviderUnavailableError('Redis is unreachable: cannot take the git repository lock', { cause: error });
    }
    if (acquired === 'OK') return new RedisLease(options, token);
    if (Date.now() >= deadline) {
      throw new ProviderUnavailableError(`the git repository lock ${options.key} stayed taken for ${options.acquireTimeoutMs} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, wait + Math.random() * wait));
    wait = Math.min(wait * 2, 100);
  }
}

const NO_LEASE: Lease = { assertHeld() {} };

/** The lock of the repository at `realPath`: the process mutex, plus the Redis lease when `redis` is given. */
export function repoLock(realPath: string, redis?: RedisLockOptions): RepoLock {
  const options = redis && { leaseMs: 15_000, acquireTimeoutMs: 30_000, ...redis };
  return {
    run: (fn) =>
      withProcessMutex(realPath, async () => {
        if (!options) return fn(NO_LEASE);
        const lease = await acquireRedisLease(options);
        try {
          return await fn(lease);
        } finally {
          await lease.release();
        }
      }),
  };
}
