/**
 * What a job type is: a name, the queue it runs on, a zod schema for its payload and an idempotent handler that
 * returns its result and the event its success emits. The worker (not the handler) emits that event, after the
 * handler returned and at most once per job, so a handler stays a plain function of (payload, context) that tests
 * can call directly.
 */
import type { Queue } from 'bullmq';
import { z } from 'zod';
import type { EventBus, EventInput } from '../events/bus.js';
import type { Logger } from '../log.js';
import type { RedisConnection } from '../redis.js';
import { InvalidArgumentError, InvalidKeyError, NotFoundError, ProviderUnavailableError } from '../providers/errors.js';
import { validateKey, validateNewKey } from '../providers/keys.js';
import type { StorageProvider } from '../providers/types.js';
import type { JobJournal } from './journal.js';
import type { Staging } from './staging.js';
import type { PinnedVersion } from './version-pins.js';

/**
 * `objects`: short object mutations. `maintenance`: tier, cleanup, backup, restore-backup and migrate, which may
 * run for minutes; their own worker pool with a longer lock, so they never take the slots writes wait for.
 */
export const QUEUE_NAMES = ['objects', 'maintenance'] as const;
export type QueueName = (typeof QUEUE_NAMES)[number];

/** The parts of a BullMQ job a handler may look at (tests build their own). */
export interface JobRef {
  id: string;
  name: string;
  /** When the job was enqueued (ms since epoch, producer clock). */
  timestamp: number;
  /** 1 on the first run; more after a retry or after a crashed worker's job was picked up again. */
  attemptsStarted: number;
  /** The progress saved by earlier runs of this job (`reportProgress`): where a resumed long job continues. */
  progress?: unknown;
}

/** What the maintenance jobs need besides the stores; the worker process builds it from the config. */
export interface MaintenanceDeps {
  settings: {
    versionRetentionCount: number;
    /** 0 = versions never expire by age. */
    versionRetentionDays: number;
    stagingTtlSeconds: number;
    backupStore?: string;
    backupKeep: number;
    eventsMaxLen: number;
    /** Completed and failed jobs older than this are removed by cleanup. */
    completedJobAgeSeconds: number;
    failedJobAgeSeconds: number;
  };
  stagingProvider: StorageProvider;
  /** The job queues (cleanup removes their old jobs). */
  queues: readonly Queue[];
  /** For XTRIM of the events stream (`bus.streamKey`) and the backup lock. */
  redis: RedisConnection;
  /** `QUEUE_PREFIX`: keys of the maintenance jobs' own (the backup lock) live under it. */
  prefix: string;
}

export interface JobContext {
  stores: ReadonlyMap<string, StorageProvider>;
  staging: Staging;
  bus: EventBus;
  log: Logger;
  job: JobRef;
  /** Aborted when the worker shuts down: a long job stops between items (`throwIfInterrupted`) and resumes later. */
  signal?: AbortSignal;
  /** Saves progress in the job (visible in `GET /v1/jobs/:id` and on the board; read back as `job.progress`). */
  reportProgress?(progress: Record<string, unknown>): Promise<void>;
  maintenance?: MaintenanceDeps;
  /** A record in the job's own hash that outlives a crash of the worker running it. */
  journal?: JobJournal;
  /**
   * Throws unless this run still holds its job: the object jobs pass it to the store as their mutation's fence
   * (`Fenced`), so a run that lost its job to another (it stalled past its lock) cannot overwrite what came after.
   */
  fence?: () => Promise<void>;
  /**
   * Work to do once the job's event is out, before the job completes: releasing a staged body, which done before
   * the event would hold up the events of later mutations of the key (`providers/key-turns.ts`). Without it, at once.
   */
  afterEvent?(step: () => Promise<void>): void;
}

export interface JobOutcome<R> {
  result: R;
  /** Its `data` is `result`: a rerun of a job whose event was emitted answers with it (see `workers/worker.ts`). */
  event: Omit<EventInput<R>, 'jobId'>;
}

export interface JobDefinition<S extends z.ZodType = z.ZodType, R = unknown> {
  name: string;
  queue: QueueName;
  schema: S;
  handle(payload: z.output<S>, ctx: JobContext): Promise<JobOutcome<R>>;
  /** The version the job will read, kept from version retention until the job has run (`version-pins.ts`). */
  pins?(payload: z.output<S>): PinnedVersion | undefined;
}

export function defineJob<S extends z.ZodType, R>(definition: JobDefinition<S, R>): JobDefinition<S, R> {
  return definition;
}

const INVALID_KEY = 'INVALID_KEY';

/** A key checked by `validate` (`validateKey`, `validateNewKey`), so a bad key is refused before it reaches Redis. */
function keyCheckedBy(validate: (key: string) => string) {
  return z.string().superRefine((key, ctx) => {
    try {
      validate(key);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message, params: { code: INVALID_KEY } });
    }
  });
}

/** An object key. */
export const keySchema = keyCheckedBy(validateKey);
/** A key the job creates (a write's, a version's, a copy's target): `validateNewKey`. */
export const newKeySchema = keyCheckedBy(validateNewKey);

export const storeNameSchema = z.string().min(1).max(63);
export const authorSchema = z.object({ name: z.string().min(1).max(256), email: z.string().max(256).optional() }).strict();
/** A version's (or restore's) message. */
export const versionMessageSchema = z.string().min(1).max(4096);
/** An `If-Match` list longer than this is refused (400): matching is linear in it. */
const MAX_IF_MATCH_TAGS = 32;
const ifMatchTag = z.string().min(1).max(128);
export const ifMatchSchema = z.union([ifMatchTag, z.array(ifMatchTag).min(1).max(MAX_IF_MATCH_TAGS)]);
export const writeOptionsShape = {
  contentType: z.string().max(256).optional(),
  metadata: z.record(z.string(), z.string()).optional(),
  ifMatch: ifMatchSchema.optional(),
  ifNoneMatch: z.literal('*').optional(),
};

/**
 * Validates a payload; a key failure is `InvalidKeyError`, anything else `InvalidArgumentError`, so the API maps
 * them to 400 and the worker to an unrecoverable failure.
 */
export function parsePayload<S extends z.ZodType>(definition: JobDefinition<S, unknown>, data: unknown): z.output<S> {
  const parsed = definition.schema.safeParse(data);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const where = issue?.path.length ? `${issue.path.join('.')}: ` : '';
  // Cut: a malformed job's field names and values (megabytes, added by hand) would ride in its job.failed event.
  const text = `${where}${issue?.message ?? 'invalid payload'}`;
  const message = `${definition.name} job: ${text.length > 512 ? `${text.slice(0, 512)}…` : text}`;
  const isKeyIssue = issue?.code === 'custom' && (issue as { params?: { code?: string } }).params?.code === INVALID_KEY;
  throw isKeyIssue ? new InvalidKeyError(message, { cause: parsed.error }) : new InvalidArgumentError(message, { cause: parsed.error });
}

export function storeOf(ctx: Pick<JobContext, 'stores'>, store: string): StorageProvider {
  const provider = ctx.stores.get(store);
  if (provider === undefined) throw new NotFoundError(`no store named "${store}"`);
  return provider;
}

/**
 * Thrown by a long job that saw `ctx.signal` abort: the worker puts the job back (without using up an attempt)
 * for another worker, which resumes from the saved progress.
 */
export class JobInterruptedError extends Error {
  constructor(message = 'the worker is shutting down') {
    super(message);
    this.name = 'JobInterruptedError';
  }
}

/**
 * Another job holds a lock this one needs (a restore of the store a backup would prune). The worker parks the job
 * (backoff from 1 s, capped at a minute) for as long as the holder keeps the lock, using up none of its attempts and
 * none of `UNAVAILABLE_RETRY_SECONDS`: a long restore is no outage, and the lock lapses by itself when its holder
 * dies. Only for jobs that carry no staged body (cleanup removes those after `STAGING_TTL`).
 */
export class LockBusyError extends ProviderUnavailableError {}

export function throwIfInterrupted(ctx: Pick<JobContext, 'signal'>): void {
  if (ctx.signal?.aborted) throw new JobInterruptedError();
}

export function maintenanceOf(ctx: Pick<JobContext, 'maintenance' | 'job'>): MaintenanceDeps {
  if (ctx.maintenance === undefined) throw new InvalidArgumentError(`${ctx.job.name} job: this worker was started without maintenance settings`);
  return ctx.maintenance;
}

/**
 * What an earlier run of a long job saved, to go on from, when it wrote into `target`; nothing for a ram target,
 * whose copies lived in the memory of the process that ran before (a restart, another worker's process): the run
 * starts over, skipping what is there.
 */
export function progressInto(target: StorageProvider, ctx: Pick<JobContext, 'job'>): unknown {
  return target.kind === 'ram' ? undefined : ctx.job.progress;
}

/** A job that ran before (retry, or picked up after its worker crashed) may find its work already done. */
export function isRetry(ctx: Pick<JobContext, 'job'>): boolean {
  return ctx.job.attemptsStarted > 1;
}
