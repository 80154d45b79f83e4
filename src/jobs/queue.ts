/**
 * Queues and enqueueing (DESIGN §6).
 *
 * One queue per job family, named jobs inside it: `objects` holds write/delete/version/restore/copy (short, many,
 * latency-sensitive); the maintenance jobs of the Hybrid issue get a queue of their own, as do webhook deliveries
 * (`events/webhooks.ts`). A family shares one worker pool and one set of locking settings: a backup that runs for
 * minutes needs a long lock and must not take the slots that writes wait for, and a slow webhook receiver must not
 * hold up storage work. One queue per job type would multiply blocking connections per worker process for no gain;
 * disk and git stores that must stay on one machine (DESIGN §10) can later get a family of their own.
 *
 * Job ids are ours (`job-id.ts`): adding an id that exists is a no-op in BullMQ, so a request repeated with its
 * idempotency key makes no second job while the first is kept.
 */
import { Queue, type Job, type JobsOptions } from 'bullmq';
import { DEFAULT_JOB_RETENTION, type JobRetention } from '../config.js';
import { ProviderUnavailableError, errorTable, isStorageError } from '../providers/errors.js';
import { failureCode } from './failures.js';
import { hsetIfExists, takeConnectionErrors, type RedisConnection } from '../redis.js';
import { QUEUE_NAMES, parsePayload, type JobDefinition, type QueueName } from './definition.js';
import { jobDefinition, type JobName, type PayloadOf } from './index.js';
import { StagedOwners } from './staged-owners.js';
import { VersionPins } from './version-pins.js';
import { isStaged, type BodyRef } from './staging.js';
import { jobIdFor, queueOfJobId } from './job-id.js';

/** BullMQ's own per-queue events stream (used by QueueEvents and Bull Board), capped. */
export const BULLMQ_EVENTS_MAXLEN = 10_000;

export interface JobPolicy {
  attempts: number;
  /** First retry delay; doubles per attempt, less up to 50 % jitter. Tests pass a few ms. Default 1000. */
  backoffDelayMs?: number;
  /** Finished jobs kept (`*_JOBS_KEEP_*`). */
  retention?: JobRetention;
}

export function defaultJobOptions({ attempts, backoffDelayMs = 1000, retention = DEFAULT_JOB_RETENTION }: JobPolicy): JobsOptions {
  return {
    attempts,
    backoff: { type: 'exponential', delay: backoffDelayMs, jitter: 0.5 },
    removeOnComplete: { age: retention.completedAgeSeconds, count: retention.completedCount },
    removeOnFail: { age: retention.failedAgeSeconds, count: retention.failedCount },
  };
}

/** A field of the job's BullMQ hash: when a repeated request last ran the failed job again (ms since epoch). */
export const RERUN_AT_FIELD = 'kyozoRerunAt';

/**
 * A request repeated with its Idempotency-Key finds the job the first one made (adding an id that exists is a no-op).
 * When that job failed for a reason a retry can mend (its backend was unavailable past the parking window, or no
 * code says otherwise) — which the API answered 503 with Retry-After — the repeat runs it again, its attempts counted
 * afresh, instead of finding the same failure for the days failed jobs are kept. Its runs so far still count as runs
 * (`attemptsStarted`), so it looks for work an earlier one may have done before doing it again.
 */
async function rerunIfFailedRetryably(connection: RedisConnection, queue: Queue, jobId: string): Promise<void> {
  // The state first: every keyed request asks, and fetching the job would bring its inline body (up to 256 KiB).
  if ((await queue.getJobState(jobId)) !== 'failed') return;
  const job = await queue.getJob(jobId);
  if (job === undefined) return;
  const code = failureCode(job.failedReason);
  if (code !== undefined && !errorTable[code].retryable) return;
  // The worker's parked-retry window (UNAVAILABLE_RETRY_SECONDS) starts again for this rerun, not from the first request's,
  // and the run's failure is told as its own (`workers/worker.ts`). Gone meanwhile (retention), the job is left gone.
  if (!(await hsetIfExists(connection, queue.toKey(jobId), RERUN_AT_FIELD, String(Date.now())))) return;
  // A repeat sent at the same moment may have moved it already: then it is waiting again, as wanted.
  await job.retry('failed', { resetAttemptsMade: true }).catch(async (error: unknown) => {
    if (await job.isFailed()) throw error;
  });
}

/**
 * Enqueueing failed after its commands were sent: Redis may have added the job and lost only the answer (a
 * connection cut mid-reply). Its staged body must stay for it; if no job came of it, cleanup removes the body.
 */
export class EnqueueUncertainError extends ProviderUnavailableError {}

export interface EnqueueOptions {
  /** Same key with the same request (job, payload, content) = same job: a repeated request creates nothing new. */
  idempotencyKey?: string;
  /**
   * What makes the request the same under its idempotency key, when the payload holds more than the request said
   * (a copy's payload pins the source's etag: a repeat after the source changed is still the same request).
   */
  fingerprint?: unknown;
}

export interface Enqueued {
  jobId: string;
  queue: QueueName;
  name: string;
}

export interface JobQueues {
  /** Validates the payload with the job's schema (`InvalidKeyError` / `InvalidArgumentError`) before Redis. */
  enqueue<N extends JobName>(name: N, payload: PayloadOf<N>, opts?: EnqueueOptions): Promise<Enqueued>;
  getJob(jobId: string): Promise<Job | undefined>;
  /**
   * The job that `enqueue` with these arguments would find already made: a repeat under its idempotency key, which
   * is answered with that job, so a check that held for the first request (a version, a manifest still there) is
   * not made again. Undefined without a key.
   */
  madeBefore<N extends JobName>(name: N, payload: PayloadOf<N>, opts: EnqueueOptions): Promise<Job | undefined>;
  queue(name: QueueName): Queue;
  /** Every queue, e.g. for Bull Board. */
  all(): Queue[];
  close(): Promise<void>;
}

export interface JobQueuesOptions extends JobPolicy {
  /** A producer connection (fails fast when Redis is down); shared by the queues, closed by its owner. */
  connection: RedisConnection;
  prefix: string;
}

/** A job's definition, its payload as its schema reads it, and the id `enqueue` gives it. */
function identify(name: JobName, payload: unknown, opts: EnqueueOptions): { definition: JobDefinition; data: unknown; jobId: string } {
  const definition = jobDefinition(name) as JobDefinition;
  const data = parsePayload(definition, payload);
  return { definition, data, jobId: jobIdFor(definition.queue, name, data, opts.idempotencyKey, opts.fingerprint) };
}

export function createQueues(options: JobQueuesOptions): JobQueues {
  const queues = new Map<QueueName, Queue>();
  const owners = new StagedOwners(options.connection, options.prefix);
  const pins = new VersionPins(options.connection, options.prefix);
  const queueFor = (name: QueueName): Queue => {
    let queue = queues.get(name);
    if (queue === undefined) {
      queue = takeConnectionErrors(
        new Queue(name, {
          connection: options.connection,
          prefix: options.prefix,
          defaultJobOptions: defaultJobOptions(options),
          streams: { events: { maxLen: BULLMQ_EVENTS_MAXLEN } },
        }),
      );
      queues.set(name, queue);
      // BullMQ sets a queue up once, in its constructor, and every later add awaits that: one whose set-up failed
      // (Redis away at that moment) would fail every enqueue for good. It is dropped; the next use builds it again.
      const built = queue;
      built.waitUntilReady().catch(() => {
        if (queues.get(name) !== built) return;
        queues.delete(name);
        void built.close().catch(() => undefined);
      });
    }
    return queue;
  };

  return {
    async enqueue(name, payload, opts = {}) {
      const { definition, data, jobId } = identify(name, payload, opts);
      // BullMQ would wait for a connection that is still (re)connecting; the API wants a 503 now instead.
      if (options.connection.status !== 'ready') throw new ProviderUnavailableError(`cannot enqueue ${name}: Redis is ${options.connection.status}`);
      const body = (data as { body?: BodyRef }).body;
      let adding = false;
      try {
        // Before the job exists: from then on, cleanup knows the body is not an orphan.
        if (body !== undefined && isStaged(body)) await owners.note(body.stagedKey, jobId);
        const pinned = definition.pins?.(data);
        if (pinned !== undefined) await pins.pin(pinned, jobId);
        const queue = queueFor(definition.queue);
        adding = true;
        await queue.add(name, data, { jobId });
        if (opts.idempotencyKey !== undefined) await rerunIfFailedRetryably(options.connection, queue, jobId);
      } catch (error) {
        if (isStorageError(error)) throw error;
        const message = `cannot enqueue ${name}: ${(error as Error).message}`;
        // Failed before the job was sent (the body's owner note): no job can exist, and its body may go.
        if (!adding) throw new ProviderUnavailableError(message, { cause: error });
        throw new EnqueueUncertainError(message, { cause: error });
      }
      return { jobId, queue: definition.queue, name };
    },

    async getJob(jobId) {
      const queue = queueOfJobId(jobId);
      if (queue === undefined) return undefined;
      return (await queueFor(queue).getJob(jobId)) ?? undefined;
    },

    async madeBefore(name, payload, opts) {
      if (opts.idempotencyKey === undefined) return undefined;
      const { definition, jobId } = identify(name, payload, opts);
      return (await queueFor(definition.queue).getJob(jobId)) ?? undefined;
    },

    queue: queueFor,

    all: () => QUEUE_NAMES.map(queueFor),

    async close() {
      await Promise.allSettled([...queues.values()].map((queue) => queue.close()));
      queues.clear();
    },
  };
}
