/**
 * The BullMQ workers: one per queue family, each dispatching a job by name to its definition in `src/jobs`. The
 * stores, staging, bus and logger arrive from the caller (no globals), so tests run workers against their own.
 *
 * Events, exactly once per job: the handler returns its event; the worker emits it after the handler succeeded
 * and before BullMQ marks the job completed, with the job's own hash as the once-marker (see `events/bus.ts`).
 * A worker that dies after the provider call but before the emit leaves the job to be retried (handlers are
 * idempotent) and the retry emits; one that dies after the emit leaves a marker, so the retry does not. The job
 * does not wait for the event's reply: the bus shares the connection BullMQ completes jobs on, and once the event
 * is written there, the completion BullMQ sends next runs after it on Redis (`emitAhead`). A job whose attempts run
 * out, or that fails with an unrecoverable error, emits `job.failed` the same way, ahead of BullMQ marking it
 * failed: a worker that dies in between leaves a job that runs again, not a failure nobody hears of. Its marker is
 * per failed run (by attempts made, and a rerun's time), so a failed job retried from the board that fails again
 * says so again. A failure BullMQ decides by itself (a job stalled too often) is emitted from the `failed` listener.
 *
 * Long jobs (the maintenance family, `delete-prefix`) save progress in the job as they go and watch an AbortSignal
 * that `close` aborts: one that stops for a shutdown throws `JobInterruptedError`, and the job goes straight back to
 * the queue without using up an attempt, for the next worker to resume from its saved progress. Short jobs ignore
 * it and finish.
 */
import { DelayedError, Worker, type Job } from 'bullmq';
import { PARKED_RETRY_MAX_SECONDS } from '../config.js';
import type { EmitOptions, EventBus, EventInput } from '../events/bus.js';
import type { MaintenanceDeps, QueueName } from '../jobs/definition.js';
import { JobInterruptedError, LockBusyError, QUEUE_NAMES, parsePayload } from '../jobs/definition.js';
import { asJobFailure, failureCode, publicReason } from '../jobs/failures.js';
import { jobDefinition } from '../jobs/index.js';
import { queueOfJobId } from '../jobs/job-id.js';
import { RERUN_AT_FIELD } from '../jobs/queue.js';
import { MAX_STORE_NAME } from '../config.js';
import { MAX_KEY_BYTES } from '../providers/keys.js';
import { JOB_DATA_FIELD, withoutInlineBody, type Staging } from '../jobs/staging.js';
import { onceEvery, REPEATED_ERROR_LOG_MS, type Logger } from '../log.js';
import { InvalidArgumentError, isStorageError } from '../providers/errors.js';
import type { StorageProvider } from '../providers/types.js';
import type { RedisConnection } from '../redis.js';
import { APPLIED_MARKER, holdLock, LockLostError, WorkerJobContext, type JobContextDeps, type JobLock } from './job-context.js';
import { KeyTurns } from '../providers/key-turns.js';
import { closeWorkers } from '../close-workers.js';
import { registerRoster, rosterName } from '../jobs/store-roster.js';

/** Fields this service adds to a BullMQ job hash: the id of the event the job emitted. */
const EVENT_MARKER = 'kyozoEvent';
/**
 * `job.failed` of the run that failed with `attemptsMade` attempts made before it: the same after a crash between the
 * event and BullMQ's failing the job (the rerun does not emit it again), another after a retry from the board. A job
 * a repeated request ran again (`jobs/queue.ts`) has its attempts counted afresh: the time of that rerun tells its
 * failures from the first ones.
 */
async function failedMarker(connection: RedisConnection, hashKey: string, attemptsMade: number): Promise<string> {
  // Redis failing here fails the event's emit next; the job's failure must not be lost to it.
  const rerunAt = await connection.hget(hashKey, RERUN_AT_FIELD).catch(() => null);
  return `kyozoFailedEvent:${attemptsMade}${rerunAt === null ? '' : `@${rerunAt}`}`;
}
const MAX_PARKED_DELAY_MS = PARKED_RETRY_MAX_SECONDS * 1000;
/**
 * What an earlier run of this job returned, when it got as far as its event: the event's data is the job's result.
 * A run that is not the job's first (a retry, or a rerun of a job whose worker died or lost its lock) checks this
 * before doing the work again: between its event and its completion another job may have changed the same key, and
 * doing the work again would undo that (a write) or repeat it (a second version). Undefined when no earlier run
 * emitted, or its event is no longer in the capped stream.
 */
async function earlierResult(bus: EventBus, hashKey: string): Promise<{ result: unknown } | undefined> {
  const [eventId, applied] = await bus.connection.hmget(hashKey, EVENT_MARKER, APPLIED_MARKER);
  if (!eventId) return undefined;
  const event = await bus.read(eventId);
  if (event !== undefined) return { result: event.data };
  // The event left the capped stream (a completed job retried from the board days later): the result set with its
  // marker, in the same script, still says the job ran — a delete or a copy done again would undo what came after.
  return typeof applied === 'string' ? { result: JSON.parse(applied) as unknown } : undefined;
}

/** BullMQ's lock duration, unless a family sets its own. */
const DEFAULT_LOCK_MS = 30_000;

/** Delays before sending again an event whose script failed on Redis after it was written. */
const REEMIT_DELAYS_MS = [1_000, 5_000, 30_000];

export interface WorkersOptions {
  /**
   * A worker-role connection (`maxRetriesPerRequest: null`). BullMQ completes jobs on it (it duplicates it only for
   * its blocking fetch), and the bus must be built on it too: see `emitAhead`.
   */
  connection: RedisConnection;
  prefix: string;
  stores: ReadonlyMap<string, StorageProvider>;
  bus: EventBus;
  staging: Staging;
  log: Logger;
  /** Jobs run in parallel per worker (`WORKER_CONCURRENCY`). */
  concurrency: number;
  /** How long a job stays locked without renewal: a killed worker's jobs are picked up after about this long. */
  lockDurationMs?: number;
  /** How often this worker looks for jobs whose worker died. */
  stalledIntervalMs?: number;
  /**
   * How often one job may be recovered from a dead worker before it fails. Default 5 (as `JOB_ATTEMPTS`): a job
   * in hand during two crashes in a row is still done, not failed.
   */
  maxStalledCount?: number;
  /**
   * How long (ms since its first unavailable failure) a job whose backend is unavailable keeps being retried after its
   * attempts ran out (`UNAVAILABLE_RETRY_SECONDS`). An outage longer than the attempts' backoff, plus the breaker's
   * half-open delay, must not turn an accepted write into a failed one. Default one hour.
   */
  unavailableRetryMs?: number;
  /** Which families to work on; all by default. */
  queues?: readonly QueueName[];
  /** Per-family overrides of concurrency and lock settings (the maintenance family: fewer, longer jobs). */
  families?: Partial<Record<QueueName, FamilyOptions>>;
  /** What maintenance jobs need besides the stores. */
  maintenance?: MaintenanceDeps;
}

export type FamilyOptions = Partial<Pick<WorkersOptions, 'concurrency' | 'lockDurationMs' | 'stalledIntervalMs'>>;

export interface Workers {
  readonly workers: readonly Worker[];
  waitUntilReady(): Promise<void>;
  /**
   * Stops taking jobs and waits for the active ones up to `timeoutMs`; after that, drops the connections (the
   * unfinished jobs are picked up by another worker once their locks expire).
   */
  close(timeoutMs?: number): Promise<{ timedOut: boolean }>;
}

/** The store and key a failed job's event names: only ones that could be real (a malformed job's megabytes are not). */
function describeJob(job: Job): { store?: string; key?: string } {
  const data = job.data as { store?: unknown; key?: unknown } | undefined;
  return {
    store: typeof data?.store === 'string' && data.store.length <= MAX_STORE_NAME ? data.store : undefined,
    key: typeof data?.key === 'string' && Buffer.byteLength(data.key) <= MAX_KEY_BYTES ? data.key : undefined,
  };
}

/** The attempt that is running now is the job's last one. */
function lastAttempt(job: Job): boolean {
  return job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
}

/** BullMQ fails the job for good when the running attempt throws `failure`. */
function failsForGood(job: Job, failure: Error): boolean {
  return failure.name === 'UnrecoverableError' || lastAttempt(job);
}

function failedEvent(job: Job, queue: QueueName, failure: Error, attemptsMade: number): EventInput {
  const data = { name: job.name, queue, reason: publicReason(failure.message, job.id!), code: failureCode(failure.message), attemptsMade };
  return { type: 'job.failed', ...describeJob(job), jobId: job.id!, data };
}

/**
 * When the job first met its backend unavailable (ms), in its hash; a repeated request's rerun of it notes its own,
 * under its `RERUN_AT_FIELD` as `failedMarker` does. The parked-retry window counts from there, not from when the job
 * was made: a backlog, or a schedule that makes each job a period ahead, can outlast the window before a first run.
 */
const UNAVAILABLE_SINCE_FIELD = 'kyozoUnavailableSince';

/** `field`: this run's `UNAVAILABLE_SINCE_FIELD` (ARGV[2]), named after its rerun (`RERUN_AT_FIELD`, ARGV[1]) if any. */
const UNAVAILABLE_SINCE_FIELD_LUA = `
local rerunAt = redis.call('HGET', KEYS[1], ARGV[1])
local field = rerunAt and (ARGV[2] .. '@' .. rerunAt) or ARGV[2]
`;

/** Notes `ARGV[3]` (now) as this run's `UNAVAILABLE_SINCE_FIELD` unless noted, in an existing job hash; answers it. */
const NOTE_UNAVAILABLE_SINCE = `${UNAVAILABLE_SINCE_FIELD_LUA}
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSETNX', KEYS[1], field, ARGV[3]) end
return redis.call('HGET', KEYS[1], field)
`;

const FORGET_UNAVAILABLE_SINCE = `${UNAVAILABLE_SINCE_FIELD_LUA}
return redis.call('HDEL', KEYS[1], field)
`;

/** Where the parked-retry window starts: the first unavailable failure's time, noted now if this is the first. */
async function unavailableSince(connection: RedisConnection, hashKey: string): Promise<number> {
  const now = Date.now();
  // Redis refusing the note: the window starts now, rather than an accepted job failing for it.
  const noted = await connection.eval(NOTE_UNAVAILABLE_SINCE, 1, hashKey, RERUN_AT_FIELD, UNAVAILABLE_SINCE_FIELD, now).catch(() => null);
  return noted === null ? now : Number(noted);
}

/**
 * The parked-retry window ends: the job got past its backend's outage (to a lock another job holds), and an outage
 * it meets later starts a window of its own. Redis refusing: the old start stays, as if the outage had gone on.
 */
async function forgetUnavailableSince(connection: RedisConnection, hashKey: string): Promise<void> {
  await connection.eval(FORGET_UNAVAILABLE_SINCE, 1, hashKey, RERUN_AT_FIELD, UNAVAILABLE_SINCE_FIELD).catch(() => undefined);
}

/** Parked retries keep the job's exponential backoff, capped at a minute, with the same downward jitter. */
function parkedRetryDelay(job: Job): number {
  const base = (job.opts.backoff as { delay?: number } | undefined)?.delay ?? 1000;
  const delay = Math.min(MAX_PARKED_DELAY_MS, base * 2 ** Math.max(0, job.attemptsStarted - 1));
  return Math.round(delay * (1 - 0.5 * Math.random()));
}

/** What orders a job's event among others (`KeyTurns`): the one object its payload names (the target, for a copy). */
function orderKeyOf(payload: unknown): string | undefined {
  const { store, key } = payload as { store?: unknown; key?: unknown };
  return typeof store === 'string' && typeof key === 'string' ? `${store}\n${key}` : undefined;
}

/**
 * Emits a job's event ahead of its completion and returns once the event is written to the connection, a round trip
 * before its reply. Redis runs the connection's commands in order, so the completion BullMQ sends next can never
 * run without the event before it; a crash in between leaves a job that runs again, and its marker keeps the rerun
 * from emitting twice. Should the script itself fail on Redis after it was written (the job may complete anyway),
 * the event is sent again a few times, which the same marker makes harmless.
 */
async function emitAhead(bus: EventBus, event: EventInput, once: NonNullable<EmitOptions['once']>, log: Logger): Promise<void> {
  let written = false;
  let markWritten!: () => void;
  const onWritten = new Promise<void>((resolve) => (markWritten = resolve));
  const emitted = bus.emit(event, {
    once,
    onWritten: () => {
      written = true;
      markWritten();
    },
  });
  // Failing before it was written, the emit fails the job (which runs again); after, the job is past waiting for it.
  emitted.catch((error: unknown) => written && reemit(bus, event, once, log, error, 0));
  await Promise.race([onWritten, emitted]);
}

function reemit(bus: EventBus, event: EventInput, once: NonNullable<EmitOptions['once']>, log: Logger, error: unknown, attempt: number): void {
  const delay = REEMIT_DELAYS_MS[attempt];
  if (delay === undefined) {
    log.error({ err: error, jobId: event.jobId, type: event.type }, 'event not emitted: gave up sending it again');
    return;
  }
  log.warn({ err: error, jobId: event.jobId, type: event.type, retryInMs: delay }, 'event not emitted; sending it again');
  setTimeout(() => {
    bus.emit(event, { once }).catch((next: unknown) => reemit(bus, event, once, log, next, attempt + 1));
  }, delay).unref();
}

export function createWorkers(options: WorkersOptions): Workers {
  const { bus, log } = options;
  if (bus.connection !== options.connection) {
    // emitAhead's ordering holds only on one connection.
    throw new Error('createWorkers: the event bus must be created on the workers\' connection');
  }
  const contextDeps: JobContextDeps = {
    stores: options.stores,
    staging: options.staging,
    bus,
    log,
    connection: options.connection,
    maintenance: options.maintenance,
    turns: new KeyTurns(),
  };
  const unavailableRetryMs = options.unavailableRetryMs ?? 3_600_000;
  /** The same worker error (a refused connection, on every reconnect while Redis is down) at most once a period. */
  const repeats = onceEvery(REPEATED_ERROR_LOG_MS);
  /** Jobs whose `job.failed` their run emitted: the `failed` listener leaves them alone. */
  const failedAhead = new WeakSet<Job>();
  // One signal for every job, aborted by `close`: BullMQ's own (an AbortController per job, for a processor taking a
  // third parameter) would cost each short job for what only the long ones watch.
  const shutdown = new AbortController();

  const start = (queue: QueueName): Worker => {
    const family = { ...options, ...options.families?.[queue] };
    const lockDurationMs = family.lockDurationMs ?? DEFAULT_LOCK_MS;
    /** The `LockLostError` of a run whose lock lapsed, else undefined (also when Redis cannot tell: its outcome is then refused anyway). */
    const lockLost = async (job: Job, lock: JobLock | undefined): Promise<LockLostError | undefined> => {
      try {
        await holdLock(options.connection, worker.toKey(job.id!), job, lock);
        return undefined;
      } catch (error) {
        return error instanceof LockLostError ? error : undefined;
      }
    };
    const processor = async (job: Job, token?: string) => {
      const lock = token === undefined ? undefined : { token, durationMs: lockDurationMs };
      let ctx: WorkerJobContext | undefined;
      try {
        const definition = jobDefinition(job.name);
        if (definition === undefined) throw new InvalidArgumentError(`no job type named "${job.name.slice(0, 64)}"`);
        // Added to a queue by hand (Redis, an older version): run only where it belongs, under an id status finds.
        if (definition.queue !== queue) throw new InvalidArgumentError(`${job.name} jobs run on the ${definition.queue} queue, not on ${queue}`);
        if (queueOfJobId(job.id!) !== queue) throw new InvalidArgumentError(`job id "${job.id!.slice(0, 64)}" is none this service gives (${queue}-<id>)`);
        const payload = parsePayload(definition, job.data);
        const jobId = job.id!;
        if (job.attemptsStarted > 1) {
          const earlier = await earlierResult(bus, worker.toKey(jobId));
          if (earlier !== undefined) return earlier.result;
        }
        ctx = new WorkerJobContext(job, worker.toKey(jobId), contextDeps, shutdown.signal, lock, orderKeyOf(payload));
        const { result, event } = await definition.handle(payload, ctx);
        // The content is written: the job kept for the retention window need not hold it. A rerun (retried from the
        // board, or after a crash before the completion) answers from the result journaled with the event instead.
        // Every job's result is kept with its marker, for a rerun after its event left the stream (`earlierResult`).
        const kept = withoutInlineBody(job.data);
        const applied = JSON.stringify(result ?? null);
        const alsoSet: Record<string, string> = { [APPLIED_MARKER]: applied };
        if (kept !== undefined) alsoSet[JOB_DATA_FIELD] = JSON.stringify(kept);
        // After the events of the key's mutations committed before this one (`key-turns.ts`).
        if (ctx.turn?.ready !== undefined) await ctx.turn.ready;
        await emitAhead(bus, { ...event, jobId }, { key: worker.toKey(jobId), field: EVENT_MARKER, alsoSet }, log);
        ctx.turn?.leave();
        // A staged body goes now, its event out and the key's next event free to leave.
        const finishing = ctx.finishAfterEvent();
        if (finishing !== undefined) await finishing;
        return result;
      } catch (error) {
        // A run that failed after its lock lapsed (stalled, then an error before any commit) must not report its
        // failure either: another run may have completed the job meanwhile.
        const lost = error instanceof LockLostError ? error : await lockLost(job, lock);
        if (lost !== undefined) {
          // Another run has the job now: this one neither fails it nor emits anything (BullMQ refuses its outcome).
          log.warn({ queue, jobId: job.id, err: lost, failure: lost === error ? undefined : error }, 'job run abandoned: it lost its lock');
          throw lost;
        }
        if (error instanceof LockBusyError) {
          // Waiting for another job's lock is no failure and no outage: parked at once, for as long as the lock is
          // held, using up no attempt (the run after the wait has them all) and no parked-retry window.
          log.info({ queue, jobId: job.id, reason: error.message }, 'job waits for a lock another job holds');
          await forgetUnavailableSince(options.connection, worker.toKey(job.id!));
          await job.moveToDelayed(Date.now() + parkedRetryDelay(job), token);
          throw new DelayedError(error.message);
        }
        if (
          isStorageError(error) &&
          error.code === 'PROVIDER_UNAVAILABLE' &&
          Date.now() - (await unavailableSince(options.connection, worker.toKey(job.id!))) < unavailableRetryMs &&
          lastAttempt(job)
        ) {
          // Attempts spent, backend still down: park the job and try again later instead of failing it. The window's
          // start is asked before `lastAttempt`: every unavailable failure notes it, in case it is the first.
          await job.moveToDelayed(Date.now() + parkedRetryDelay(job), token);
          throw new DelayedError(`backend unavailable, retrying: ${error.message}`);
        }
        if (error instanceof JobInterruptedError) {
          // Back to the queue at once, without using up an attempt: another worker resumes from the saved progress.
          await job.moveToDelayed(Date.now(), token);
          throw new DelayedError(error.message);
        }
        const failure = asJobFailure(error);
        if (failsForGood(job, failure)) {
          const once = { key: worker.toKey(job.id!), field: await failedMarker(options.connection, worker.toKey(job.id!), job.attemptsMade) };
          // Not sent (Redis refused it), the failure still stands: it is what the job's status reports.
          await emitAhead(bus, failedEvent(job, queue, failure, job.attemptsMade + 1), once, log).catch((emitError: unknown) =>
            log.error({ err: emitError, jobId: job.id }, 'could not emit job.failed'),
          );
          failedAhead.add(job);
        }
        throw failure;
      } finally {
        ctx?.turn?.leave();
      }
    };
    const worker: Worker = new Worker(queue, processor, {
      connection: options.connection,
      prefix: options.prefix,
      concurrency: family.concurrency,
      lockDuration: lockDurationMs,
      stalledInterval: family.stalledIntervalMs ?? 30_000,
      maxStalledCount: options.maxStalledCount ?? 5,
      // Its stores, for the web process to check its own against (`store-roster.ts`).
      name: rosterName(options.stores.keys()),
    });

    worker.on('failed', (job, error) => {
      if (job === undefined) return;
      // BullMQ has counted the attempt by now.
      const final = error.name === 'UnrecoverableError' || job.attemptsMade >= (job.opts.attempts ?? 1);
      log[final ? 'error' : 'warn'](
        { queue, jobId: job.id, job: job.name, attemptsMade: job.attemptsMade, err: error },
        final ? 'job failed' : 'job failed, will retry',
      );
      if (!final || failedAhead.delete(job)) return;
      const hashKey = worker.toKey(job.id!);
      failedMarker(options.connection, hashKey, job.attemptsMade - 1)
        .then((field) => bus.emit(failedEvent(job, queue, error, job.attemptsMade), { once: { key: hashKey, field } }))
        .catch((emitError: unknown) => log.error({ err: emitError, jobId: job.id }, 'could not emit job.failed'));
    });
    worker.on('error', (error) => repeats(`${queue} ${error.message}`, (repeated) => log.error({ err: error, queue, repeated }, 'worker error')));
    worker.on('stalled', (jobId) => log.warn({ queue, jobId }, 'job stalled: its worker stopped; another run picks it up'));
    return worker;
  };

  const workers = (options.queues ?? QUEUE_NAMES).map(start);

  return {
    workers,

    async waitUntilReady() {
      await Promise.all([...workers.map((worker) => worker.waitUntilReady()), registerRoster(options.connection, options.prefix, options.stores.keys())]);
    },

    async close(timeoutMs = Number.POSITIVE_INFINITY) {
      // Long jobs watch the signal and stop between items; short ones ignore it and finish.
      shutdown.abort();
      return closeWorkers(workers, timeoutMs);
    },
  };
}
