/**
 * A store's backup lock: one backup, or restore of its backups, at a time (`backup.ts` prunes blobs a concurrent run
 * may count on). Held in Redis under the job's id, renewed while the run lasts, released when it ends.
 *
 * A lock outlives its run in two cases. A run interrupted by a shutdown keeps it, so that no other backup slips in
 * before the job resumes. A run that lost its job (its worker froze past the job's lock) leaves it too, for the run
 * that took the job over holds it under the same name. When no run will come — the holder's job completed, failed for
 * good or was removed — the lock is taken over at once rather than lapsing 10 minutes later.
 */
import { PreconditionFailedError } from '../providers/errors.js';
import { passFence } from '../providers/fence.js';
import { JobInterruptedError, LockBusyError, maintenanceOf, type JobContext, type QueueName } from './definition.js';

/** The queue of the jobs that hold a store lock: `backup` and `restore-backup`. */
const HOLDERS_QUEUE: QueueName = 'maintenance';
/** A crashed worker's lock lapses after this; a running backup renews it every third of it. */
const LOCK_MS = 10 * 60_000;
const RENEW_SCRIPT = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0";
const RELEASE_SCRIPT = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
/**
 * Takes the lock (KEYS[1]) from ARGV[1] for ARGV[3] when the holder's job is over: its hash (KEYS[2]) gone, or its
 * id (ARGV[2]) in the queue's completed (KEYS[3]) or failed (KEYS[4]) set. Waiting, active and delayed jobs are live.
 */
const TAKE_OVER_SCRIPT = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 and not redis.call('ZSCORE', KEYS[3], ARGV[2]) and not redis.call('ZSCORE', KEYS[4], ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
return 1`;

/** A store's lock is taken by its backups and by restores of its backups (whose manifest and blobs retention prunes). */
export type StoreLockUse = 'backup' | 'restore';
/** Marks a restore's hold on the lock (job ids have no spaces): a backup that finds it waits instead of failing. */
const RESTORE_HOLDER = 'restore ';

/**
 * Runs `work` holding the store's backup lock. The job that holds it may take it again (a resumed run), and keeps
 * it when it is interrupted. `work` is told whether the lock was still this job's from an earlier run: only then did
 * no other backup run in between.
 */
export async function withStoreLock<T>(ctx: JobContext, store: string, use: StoreLockUse, work: (heldBefore: boolean) => Promise<T>): Promise<T> {
  const { redis, prefix } = maintenanceOf(ctx);
  const key = `${prefix}:backup-lock:${store}`;
  const holder = use === 'restore' ? `${RESTORE_HOLDER}${ctx.job.id}` : ctx.job.id;
  let heldBefore = (await redis.set(key, holder, 'PX', LOCK_MS, 'NX')) !== 'OK';
  if (heldBefore) {
    const current = await redis.get(key);
    if (current !== holder) {
      if (current === null || !(await takeOverFromFinished(ctx, key, current, holder))) throw lockTaken(store, use, current);
      ctx.log.warn({ store, holder: current }, 'took over the backup lock of a job that is over');
      heldBefore = false;
    }
  }
  const renew = () => redis.eval(RENEW_SCRIPT, 1, key, holder, LOCK_MS);
  await renew();
  const renewal = setInterval(() => void renew().catch((error: unknown) => ctx.log.warn({ err: error }, 'could not renew the backup lock')), LOCK_MS / 3);
  renewal.unref();
  let interrupted = false;
  try {
    return await work(heldBefore);
  } catch (error) {
    interrupted = error instanceof JobInterruptedError; // it resumes under the lock
    throw error;
  } finally {
    clearInterval(renewal);
    if (!interrupted && (await stillHoldsJob(ctx))) {
      await redis.eval(RELEASE_SCRIPT, 1, key, holder).catch((error: unknown) => ctx.log.warn({ err: error }, 'could not release the backup lock'));
    }
  }
}

/** Whether the lock, held by `current`, was taken over for `holder` because `current`'s job is over. */
async function takeOverFromFinished(ctx: JobContext, key: string, current: string, holder: string): Promise<boolean> {
  const { redis, queues } = maintenanceOf(ctx);
  const jobId = current.startsWith(RESTORE_HOLDER) ? current.slice(RESTORE_HOLDER.length) : current;
  // Where the holder is, whatever its id says (one added on the board may read as another queue's, or as none).
  const queue = queues.find((candidate) => candidate.name === HOLDERS_QUEUE);
  if (queue === undefined) return false; // a worker without its queues (a test's): the lock lapses
  const taken = await redis.eval(TAKE_OVER_SCRIPT, 4, key, queue.toKey(jobId), queue.toKey('completed'), queue.toKey('failed'), current, jobId, holder, LOCK_MS);
  return Number(taken) === 1;
}

/** Whether the job's fence still passes (Redis unable to say: no, and the lock lapses by itself). */
async function stillHoldsJob(ctx: JobContext): Promise<boolean> {
  return passFence(ctx).then(
    () => true,
    () => false,
  );
}

/**
 * Why a job could not take the lock. A second backup fails (it would repeat the one running); a backup and a restore,
 * or two restores, wait for each other: the worker parks the waiting one for as long as the lock is held. A lock
 * released between the refused take and the look at its holder (`null`) is taken at the next try.
 */
function lockTaken(store: string, use: StoreLockUse, current: string | null): Error {
  if (current === null) return new LockBusyError(`the lock of "${store}"'s backups was released as it was taken: tried again shortly`);
  const restoring = current.startsWith(RESTORE_HOLDER);
  if (use === 'backup' && !restoring) return new PreconditionFailedError(`a backup of "${store}" is already running (job ${current})`);
  return new LockBusyError(`a ${restoring ? 'restore' : 'backup'} of "${store}"'s backups holds its lock (${current}): retried later`);
}
