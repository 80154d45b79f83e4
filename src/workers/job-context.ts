/**
 * The context a job's handler runs in, made once per job by the worker. A class rather than an object literal of
 * closures: the object jobs run thousands of times a second, and what few of them use (logger, journal) is made on
 * first use.
 */
import type { Job } from 'bullmq';
import type { EventBus } from '../events/bus.js';
import type { JobContext, JobRef, MaintenanceDeps } from '../jobs/definition.js';
import type { JobJournal } from '../jobs/journal.js';
import type { Staging } from '../jobs/staging.js';
import type { Logger } from '../log.js';
import type { StorageProvider } from '../providers/types.js';
import { hsetIfExists, type RedisConnection } from '../redis.js';
import type { KeyTurn, KeyTurns } from '../providers/key-turns.js';

/**
 * The field of the job's BullMQ hash that holds the result a job recorded before releasing its staged body, or with
 * its event when its inline body was dropped (`workers/worker.ts`).
 */
export const APPLIED_MARKER = 'kyozoApplied';

export interface JobContextDeps {
  stores: ReadonlyMap<string, StorageProvider>;
  staging: Staging;
  bus: EventBus;
  log: Logger;
  connection: RedisConnection;
  maintenance?: MaintenanceDeps;
  /** The order of each key's events in this process (`key-turns.ts`). */
  turns: KeyTurns;
}

/**
 * 1 when `ARGV[1]` (this run's token) holds the job's lock, else 0. A lock with less than `ARGV[2]` ms left is
 * extended to `ARGV[3]` ms first, as BullMQ's own renewal would: the run still owns its job and may commit.
 */
const HOLD_LOCK = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
`;

/** A commit waits on the fence only with at least this share of the lock duration left (5 s of 30). */
const FENCE_MARGIN_SHARE = 1 / 6;

/** The run no longer holds its job: another run may have taken it over, so this one must change nothing. */
export class LockLostError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LockLostError';
  }
}

/** This run's hold on its job: BullMQ's lock token, and how long a lock lasts unrenewed. */
export interface JobLock {
  token: string;
  durationMs: number;
}

/**
 * Throws `LockLostError` unless `lock` still holds the job, with time left for a commit (extended when it has less
 * than the margin). BullMQ set it for the lock duration when the job was taken, no earlier than `processedOn` (this
 * process's clock, read before the request went out), and only extends it: until then, less the margin, it cannot
 * have lapsed and no Redis call is needed — the common case.
 */
export async function holdLock(connection: RedisConnection, hashKey: string, job: Pick<Job, 'id' | 'processedOn'>, lock: JobLock | undefined): Promise<void> {
  if (lock === undefined) return;
  const margin = lock.durationMs * FENCE_MARGIN_SHARE;
  if (Date.now() < (job.processedOn ?? 0) + lock.durationMs - margin) return;
  const held = await connection.eval(HOLD_LOCK, 1, `${hashKey}:lock`, lock.token, Math.ceil(margin), lock.durationMs);
  if (Number(held) !== 1) throw new LockLostError(`job ${job.id} is no longer this run's: its lock lapsed, and another run may have it`);
}

/** Fields of `JobJournal.noteOnce` in the job's hash. */
const NOTE_PREFIX = 'kyozoNote:';

/** Sets the field unless it is set (and only in a job hash that still exists); answers what it holds. */
const NOTE_ONCE = `
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) end
return redis.call('HGET', KEYS[1], ARGV[1])
`;

/** A journal in the job's own hash: it lives and goes with the job. */
class JobHashJournal implements JobJournal {
  constructor(
    private readonly connection: RedisConnection,
    private readonly hashKey: string,
  ) {}

  async remember(result: unknown): Promise<void> {
    await hsetIfExists(this.connection, this.hashKey, APPLIED_MARKER, JSON.stringify(result));
  }

  async recall(): Promise<unknown> {
    const saved = await this.connection.hget(this.hashKey, APPLIED_MARKER);
    return saved === null ? undefined : (JSON.parse(saved) as unknown);
  }

  async noteOnce(name: string, value: string): Promise<string | undefined> {
    const kept = await this.connection.eval(NOTE_ONCE, 1, this.hashKey, `${NOTE_PREFIX}${name}`, value);
    return kept === null ? undefined : String(kept);
  }

  async noted(name: string): Promise<string | undefined> {
    return (await this.connection.hget(this.hashKey, `${NOTE_PREFIX}${name}`)) ?? undefined;
  }
}

export class WorkerJobContext implements JobContext {
  readonly job: JobRef;
  private logger?: Logger;
  private jobJournal?: JobJournal;
  /** Taken when the job first passed its fence: the place of its event among those of its key. */
  turn?: KeyTurn;
  private afterEventSteps?: (() => Promise<void>)[];

  constructor(
    private readonly bullJob: Job,
    /** The job's hash key (`worker.toKey(id)`). */
    private readonly hashKey: string,
    private readonly deps: JobContextDeps,
    readonly signal: AbortSignal | undefined,
    private readonly lock?: JobLock,
    /** The store and key whose events this job's must follow (`KeyTurns`); none for jobs of no one key. */
    private readonly orderKey?: string,
  ) {
    const { id, name, timestamp, attemptsStarted, progress } = bullJob;
    this.job = { id: id!, name, timestamp, attemptsStarted, progress };
  }

  /** The job's lock is still this run's (`holdLock`); the first pass takes the job's turn on its key. */
  readonly fence = async (): Promise<void> => {
    await holdLock(this.deps.connection, this.hashKey, this.bullJob, this.lock);
    if (this.orderKey !== undefined) this.turn ??= this.deps.turns.take(this.orderKey);
  };

  get stores(): ReadonlyMap<string, StorageProvider> {
    return this.deps.stores;
  }

  get staging(): Staging {
    return this.deps.staging;
  }

  get bus(): EventBus {
    return this.deps.bus;
  }

  get maintenance(): MaintenanceDeps | undefined {
    return this.deps.maintenance;
  }

  get log(): Logger {
    this.logger ??= this.deps.log.child({ jobId: this.job.id, job: this.job.name });
    return this.logger;
  }

  get journal(): JobJournal {
    this.jobJournal ??= new JobHashJournal(this.deps.connection, this.hashKey);
    return this.jobJournal;
  }

  afterEvent(step: () => Promise<void>): void {
    (this.afterEventSteps ??= []).push(step);
  }

  /** Runs the steps `afterEvent` left, in order; undefined when there are none (most jobs: no promise to wait for). */
  finishAfterEvent(): Promise<void> | undefined {
    const steps = this.afterEventSteps;
    if (steps === undefined) return undefined;
    this.afterEventSteps = undefined;
    return steps.reduce((done, step) => done.then(step), Promise.resolve());
  }

  async reportProgress(progress: Record<string, unknown>): Promise<void> {
    await this.bullJob.updateProgress(progress);
  }
}
