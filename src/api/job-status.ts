/**
 * What the API says about a job (`GET /v1/jobs/:id`, `?wait=true`), and waiting for one. Waiting listens on
 * BullMQ's QueueEvents (one blocking connection per queue family, opened on the first wait) and is bounded by
 * `WAIT_TIMEOUT_MS`: past it the client gets 202 and polls the status URL.
 */
import { QueueEvents, type Job } from 'bullmq';
import type { QueueName } from '../jobs/definition.js';
import { failureCode, publicReason } from '../jobs/failures.js';
import { queueOfJobId } from '../jobs/job-id.js';
import type { JobQueues } from '../jobs/queue.js';
import { DataCorruptedError, errorTable } from '../providers/errors.js';
import { takeConnectionErrors, type RedisConnection } from '../redis.js';
import { ApiError } from './errors.js';
import { FinishedPoller } from './finished-poller.js';

export interface JobStatus {
  id: string;
  name: string;
  state: string;
  attemptsMade: number;
  attempts: number;
  progress: unknown;
  result?: unknown;
  failedReason?: string;
  store?: string;
  key?: string;
  createdAt: string;
  processedAt?: string;
  finishedAt?: string;
}

const iso = (ms: number | undefined) => (ms ? new Date(ms).toISOString() : undefined);

/** The status of job `jobId`, or undefined when there is no such job (never was, or removed after finishing). */
export async function readJobStatus(queues: JobQueues, jobId: string): Promise<JobStatus | undefined> {
  let job = await getReadableJob(queues, jobId);
  if (job === undefined) return undefined;
  const state = await job.getState();
  // A hash of that name that is in no state of the queue is not a job (a scheduler's, say).
  if (state === 'unknown') return undefined;
  // The job may have finished between reading its hash and its state: read the hash again so a finished job
  // never shows without its result.
  if ((state === 'completed' || state === 'failed') && !job.finishedOn) job = (await getReadableJob(queues, jobId)) ?? job;
  return describeJob(job, state);
}

/** The job, whose hash BullMQ parses: one written by hand with data that is not JSON is told, not a bare 500. */
async function getReadableJob(queues: JobQueues, jobId: string): Promise<Job | undefined> {
  try {
    return await queues.getJob(jobId);
  } catch (error) {
    if (error instanceof SyntaxError) throw new DataCorruptedError(`job ${jobId} cannot be read: its hash in Redis holds data that is not JSON`);
    throw error;
  }
}

function describeJob(job: Job, state: string): JobStatus {
  const data = (job.data ?? {}) as { store?: string; key?: string };
  return {
    id: job.id!,
    name: job.name,
    state,
    attemptsMade: job.attemptsMade,
    attempts: job.opts.attempts ?? 1,
    progress: job.progress,
    ...(job.returnvalue !== null && job.returnvalue !== undefined ? { result: job.returnvalue } : {}),
    // BullMQ keeps an earlier attempt's reason on a job that went on to complete: shown while it may still fail.
    ...(job.failedReason && state !== 'completed' ? { failedReason: publicReason(job.failedReason, job.id!) } : {}),
    ...(data.store !== undefined ? { store: data.store } : {}),
    ...(data.key !== undefined ? { key: data.key } : {}),
    createdAt: iso(job.timestamp)!,
    ...(job.processedOn ? { processedAt: iso(job.processedOn) } : {}),
    ...(job.finishedOn ? { finishedAt: iso(job.finishedOn) } : {}),
  };
}

/** A failed job's reason as the error a waiting client gets: the contract's status when the reason has a code. */
export function jobFailure(status: JobStatus): ApiError {
  const code = failureCode(status.failedReason);
  const message = `job ${status.id} failed: ${status.failedReason ?? 'unknown reason'}`;
  if (code !== undefined && !errorTable[code].retryable) return new ApiError(code, message);
  return new ApiError('SERVICE_UNAVAILABLE', message, { 'Retry-After': '5' });
}

/** Resolves (with nothing) once `signal` is aborted, at once if it already is. */
function aborted(signal: AbortSignal): Promise<undefined> {
  if (signal.aborted) return Promise.resolve(undefined);
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(undefined), { once: true }));
}

/**
 * Resolves when `job` completed or failed, or when `signal` is aborted; stops listening either way. It listens
 * before it reads the job's state, so a job finishing in between is seen one way or the other; the poller sees one
 * whose completion left the capped events stream before the listener read it.
 */
function finished(events: QueueEvents, poller: FinishedPoller, job: Job, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const settle = (outcome: () => void) => {
      events.off('completed', onEvent);
      events.off('failed', onEvent);
      signal.removeEventListener('abort', onAbort);
      unwatch();
      outcome();
    };
    const onEvent = ({ jobId }: { jobId: string }) => jobId === job.id && settle(resolve);
    const onAbort = () => settle(resolve);
    events.on('completed', onEvent);
    events.on('failed', onEvent);
    const unwatch = poller.watch(job.id!, () => settle(resolve));
    signal.addEventListener('abort', onAbort, { once: true });
    job.getState().then(
      (state) => (state === 'completed' || state === 'failed') && settle(resolve),
      (error: unknown) => settle(() => reject(error)),
    );
  });
}

const TIMED_OUT = Symbol('timed out');

/**
 * How long the job's status may take to read once a wait ended. The job was enqueued: a client whose wait ends
 * without it (Redis stopped answering, or failing) gets 202 and the status URL rather than an error for a request
 * that was accepted.
 */
const FINAL_READ_GRACE_MS = 1_000;

interface Listening {
  events: QueueEvents;
  connection: RedisConnection;
}

export class JobWaiter {
  private readonly events = new Map<QueueName, Promise<Listening>>();
  private readonly pollers = new Map<QueueName, FinishedPoller>();
  /** Every connection opened for listening, set up or not: closing must end those still connecting too. */
  private readonly connections = new Set<RedisConnection>();
  /** Aborted by `close`: a setup still waiting for an unreachable Redis gives up. */
  private readonly closing = new AbortController();

  constructor(
    private readonly queues: JobQueues,
    private readonly options: {
      /** Makes the blocking connection a queue's events are read on. */
      connection: () => RedisConnection;
      prefix: string;
      /** A connection that fails fast (the producer's), for the poller's reads. */
      redis: RedisConnection;
    },
  ) {}

  private pollerFor(queue: QueueName): FinishedPoller {
    let poller = this.pollers.get(queue);
    if (poller === undefined) {
      poller = new FinishedPoller(this.queues.queue(queue), this.options.redis);
      if (this.closing.signal.aborted) poller.close();
      this.pollers.set(queue, poller);
    }
    return poller;
  }

  private async eventsFor(queue: QueueName): Promise<QueueEvents> {
    if (this.closing.signal.aborted) throw new Error('the job waiter is closed');
    let entry = this.events.get(queue);
    if (entry === undefined) {
      entry = this.listen(queue);
      this.events.set(queue, entry);
      entry.catch(() => this.events.delete(queue));
    }
    const { events } = await entry;
    await events.waitUntilReady();
    return events;
  }

  /**
   * QueueEvents reading the queue's events from its newest entry now. By default it reads only what is added after
   * its first read reaches Redis, some round trips after it is made: a job finishing in between was never heard of,
   * and the first request to wait sat out its whole timeout.
   */
  private async listen(queue: QueueName): Promise<Listening> {
    const bullQueue = this.queues.queue(queue);
    const connection = this.options.connection();
    this.connections.add(connection);
    let newest: [id: string, fields: string[]] | undefined;
    try {
      // A command waiting for a connection that never comes up is not ended by disconnecting it: the race is.
      const reply = await Promise.race([connection.xrevrange(bullQueue.keys.events!, '+', '-', 'COUNT', 1), aborted(this.closing.signal)]);
      if (reply === undefined) throw new Error('the job waiter closed while it was setting up');
      [newest] = reply as [string, string[]][];
    } catch (error) {
      connection.disconnect();
      throw error;
    }
    const events = takeConnectionErrors(new QueueEvents(queue, { connection, prefix: this.options.prefix, lastEventId: newest?.[0] ?? '0-0' }));
    // Every waiting request holds two listeners here until its job finishes or its wait ends: many at once are
    // normal, not a leak.
    events.setMaxListeners(0);
    return { events, connection };
  }

  /**
   * The job's status once it finished, or its current status when `timeoutMs` passed first — the listener's setup
   * included; undefined when that cannot be read (within a second more): the job is accepted, its state unknown. Not BullMQ's `waitUntilFinished`: its check of the job's state runs inside a promise executor, where a
   * Redis failure becomes an unhandled rejection that ends the process.
   */
  async wait(jobId: string, timeoutMs: number, client?: AbortSignal): Promise<JobStatus | undefined> {
    const queue = queueOfJobId(jobId);
    if (queue === undefined) throw new ApiError('NOT_FOUND', `no job ${jobId}`);
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(), timeoutMs);
    // The client went away: nobody reads the answer, so the wait ends now.
    const onGone = () => deadline.abort();
    client?.addEventListener('abort', onGone, { once: true });
    if (client?.aborted) deadline.abort();
    try {
      // Every Redis call is raced against the deadline: a Redis that stopped answering holds a call for the
      // producer's command timeout (10 s), past what the client was promised.
      const job = await Promise.race([this.queues.getJob(jobId), aborted(deadline.signal).then(() => TIMED_OUT)]);
      if (job === undefined) throw new ApiError('NOT_FOUND', `no job ${jobId}`);
      const events = job === TIMED_OUT ? undefined : await Promise.race([this.eventsFor(queue), aborted(deadline.signal)]);
      if (events !== undefined) await finished(events, this.pollerFor(queue), job as Job, deadline.signal);
    } catch (error) {
      if (error instanceof ApiError) throw error;
      // Redis in trouble: the read below tells what is known.
    } finally {
      clearTimeout(timer);
      client?.removeEventListener('abort', onGone);
      deadline.abort();
    }
    if (client?.aborted) return undefined;
    const last = new AbortController();
    const grace = setTimeout(() => last.abort(), FINAL_READ_GRACE_MS);
    try {
      return await Promise.race([readJobStatus(this.queues, jobId), aborted(last.signal)]);
    } catch {
      return undefined;
    } finally {
      clearTimeout(grace);
    }
  }

  async close(): Promise<void> {
    this.closing.abort();
    for (const poller of this.pollers.values()) poller.close();
    const all = [...this.events.values()];
    this.events.clear();
    // One still connecting (its Redis unreachable) would never finish setting up: ended now, its setup fails.
    for (const connection of this.connections) if (connection.status !== 'ready') connection.disconnect();
    this.connections.clear();
    await Promise.allSettled(
      all.map(async (entry) => {
        const { events, connection } = await entry;
        await events.close();
        connection.disconnect();
      }),
    );
  }
}
