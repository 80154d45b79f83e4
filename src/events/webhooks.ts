/**
 * Webhooks (DESIGN §7): every event is POSTed as JSON to every `WEBHOOK_URLS` entry, signed
 * `X-Kyozo-Signature: sha256=<hex HMAC-SHA256 of the body with WEBHOOK_SECRET>` and, with a timestamp against
 * replays, as Standard Webhooks sign (`standardWebhookHeaders`).
 *
 * Two stages. For each URL, a dispatcher reads the events stream through that URL's own Redis consumer group and
 * turns each event into a BullMQ job on that URL's own queue (both named `webhooks-<url hash>`); a worker per queue
 * delivers them with retries and exponential backoff. A queue per URL keeps a receiver that hangs or fails from
 * taking the slots of the others. A group per URL means every event reaches every URL that any worker process is
 * configured with, from the moment the first process with that URL started — also while processes with different
 * lists run side by side (a rolling change of `WEBHOOK_URLS`), where one shared group gave each event only to the
 * URLs of whichever process read it. The consumer group (rather than pub/sub) means no event is missed while no
 * worker process runs, and several worker processes share a URL's stream instead of each delivering everything. An
 * entry is acknowledged only after its job was added; if a dispatcher dies in between, another claims the entry
 * after `claimIdleMs` and adds it again, which is harmless: the job id is `<event id>.<url hash>`, and BullMQ
 * ignores a second add of an id while the first job is kept.
 *
 * Each URL's dispatcher (`webhook-dispatcher.ts`) makes its group again when it is gone — the stream key vanished
 * with it (a Redis restart without persistence, a flush, a failover to an empty replica), or someone deleted it —
 * after the last entry it saw. An entry that is not an event this service wrote is acknowledged and skipped, never
 * retried forever in front of the events read with it. Consumers of processes that died are removed once they hold
 * nothing and have been idle for ten claim periods.
 *
 * A delivery goes only to a configured URL, and only through that URL's own queue: the worker of a queue posts to
 * the URL the queue was made for, never to `job.data.url`, and refuses (unrecoverable, no request sent) a job whose
 * `url` is another. A job added to the queue by other means (the board, which shows these queues read-only, or
 * anyone with the Redis) would otherwise get its body signed with `WEBHOOK_SECRET` and sent to an address of its
 * choosing, internal ones included.
 *
 * A redirect is a failed delivery, not followed: fetch would follow a 301/302/303 with a body-less GET. URLs are
 * logged and reported by origin and hash only: a webhook URL often carries its receiver's secret in its path.
 *
 * Delivery failures are logged, not emitted as `job.failed`: that event would itself be delivered to the same
 * failing receiver, and so on.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { hostname } from 'node:os';
import { Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { JobRetention } from '../config.js';
import { onceEvery, REPEATED_ERROR_LOG_MS, type Logger } from '../log.js';
import { takeConnectionErrors, type RedisConnection } from '../redis.js';
import { describeUrl, startDispatcher, webhookQueueName, type Delivery } from './webhook-dispatcher.js';
import { closeWorkers } from '../close-workers.js';

export { webhookQueueName, type Delivery };
export const SIGNATURE_HEADER = 'X-Kyozo-Signature';

/**
 * How long deliveries are kept, whatever `*_JOBS_KEEP_*` say of jobs: a delivery that gave up waits in its queue's
 * failed set for `POST /v1/webhooks/redeliver`. Cleanup removes older ones from queues gone quiet.
 */
export const DELIVERY_RETENTION: JobRetention = {
  completedAgeSeconds: 24 * 3600,
  completedCount: 10_000,
  failedAgeSeconds: 7 * 24 * 3600,
  failedCount: 10_000,
};

export function signBody(body: string, secret: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

/**
 * The Standard Webhooks headers (standardwebhooks.com) of one delivery attempt: `webhook-id` (the event's id, the
 * same on every attempt), `webhook-timestamp` (this attempt's time, Unix seconds) and, with a secret,
 * `webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`. Unlike `X-Kyozo-Signature`, the
 * signature covers the time it was made: a receiver verifying with one of that specification's libraries (the key:
 * `whsec_` + base64 of the secret's UTF-8 bytes) refuses a captured delivery replayed after its tolerance.
 */
export function standardWebhookHeaders(eventId: string, body: string, secret: string | undefined, now = Date.now()): Record<string, string> {
  const timestamp = String(Math.floor(now / 1000));
  const headers: Record<string, string> = { 'webhook-id': eventId, 'webhook-timestamp': timestamp };
  if (secret !== undefined) {
    headers['webhook-signature'] = `v1,${createHmac('sha256', secret).update(`${eventId}.${timestamp}.${body}`).digest('base64')}`;
  }
  return headers;
}

/** Constant-time check of a `X-Kyozo-Signature` header, for receivers (and tests). */
export function verifySignature(body: string, header: string | undefined, secret: string): boolean {
  if (header === undefined) return false;
  const expected = Buffer.from(signBody(body, secret));
  const given = Buffer.from(header);
  return expected.length === given.length && timingSafeEqual(expected, given);
}


export interface WebhooksOptions {
  /** A worker-role connection; duplicated for the blocking stream reader and by BullMQ for its worker. */
  connection: RedisConnection;
  prefix: string;
  /** The events stream (`bus.streamKey`). */
  streamKey: string;
  urls: readonly string[];
  secret?: string;
  log: Logger;
  /** Delivery attempts per event and URL (default 10: exponential backoff from 1 s spans about 8 minutes). */
  attempts?: number;
  backoffDelayMs?: number;
  /** Deliveries in flight per URL. */
  concurrency?: number;
  /** Per-request timeout. */
  timeoutMs?: number;
  /** An entry another dispatcher read but did not acknowledge for this long is taken over. */
  claimIdleMs?: number;
  /** How long one blocking read of the stream waits. */
  blockMs?: number;
  /** Deliveries a URL's queue holds before its dispatcher stops reading the stream (default 1,000). */
  maxQueued?: number;
}

export interface Webhooks {
  /** Resolves once the consumer group exists: events emitted from then on will be delivered. */
  ready: Promise<void>;
  /** The delivery queue of each URL. */
  queues: ReadonlyMap<string, Queue<Delivery>>;
  /** Stops reading events, lets active deliveries finish (within `timeoutMs`), closes the queues and workers. */
  close(timeoutMs?: number): Promise<void>;
}


export function startWebhooks(options: WebhooksOptions): Webhooks {
  const { connection, prefix, streamKey, urls, secret, log } = options;
  const blockMs = options.blockMs ?? 2_000;
  const claimIdleMs = options.claimIdleMs ?? 60_000;
  const maxQueued = options.maxQueued ?? 1_000;
  const consumer = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;

  /** A delivery from `url`'s queue: to `url`, whatever the job says. */
  async function deliver(url: string, job: Job<Delivery>): Promise<{ status: number }> {
    const { body, type, eventId } = job.data;
    // The job's own url is not echoed: it is none of the configured ones and may be anything.
    if (job.data.url !== url) throw new UnrecoverableError(`refused: the job's url is not ${describeUrl(url)}, the URL of this queue`);
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'user-agent': 'kyozo-webhooks',
      'x-kyozo-event': type,
      'x-kyozo-event-id': eventId,
      'x-kyozo-delivery': job.id ?? '',
      ...standardWebhookHeaders(eventId, body, secret),
    };
    if (secret !== undefined) headers[SIGNATURE_HEADER.toLowerCase()] = signBody(body, secret);
    const response = await fetch(url, { method: 'POST', headers, body, redirect: 'manual', signal: AbortSignal.timeout(options.timeoutMs ?? 10_000) });
    await response.body?.cancel();
    const location = response.headers.get('location');
    if (!response.ok) throw new Error(`${describeUrl(url)} answered ${response.status}${location === null ? '' : ` (Location: ${location})`}`);
    return { status: response.status };
  }

  const queues = new Map<string, Queue<Delivery>>();
  const workers: Worker<Delivery>[] = [];
  /** The same error of a URL's worker (a refused connection, on every reconnect while Redis is down) once a period. */
  const repeats = onceEvery(REPEATED_ERROR_LOG_MS);
  for (const url of new Set(urls)) {
    const name = webhookQueueName(url);
    const queue = new Queue<Delivery>(name, {
      connection,
      prefix,
      defaultJobOptions: {
        attempts: options.attempts ?? 10,
        backoff: { type: 'exponential', delay: options.backoffDelayMs ?? 1_000, jitter: 0.5 },
        removeOnComplete: { age: DELIVERY_RETENTION.completedAgeSeconds, count: DELIVERY_RETENTION.completedCount },
        removeOnFail: { age: DELIVERY_RETENTION.failedAgeSeconds, count: DELIVERY_RETENTION.failedCount },
      },
    });
    queues.set(url, takeConnectionErrors(queue));
    const worker = new Worker<Delivery>(name, (job) => deliver(url, job), { connection, prefix, concurrency: options.concurrency ?? 10 });
    worker.on('failed', (job, error) => {
      const final = error instanceof UnrecoverableError || (job !== undefined && job.attemptsMade >= (job.opts.attempts ?? 1));
      log[final ? 'error' : 'warn']({ webhook: describeUrl(url), eventId: job?.data.eventId, attemptsMade: job?.attemptsMade, err: error }, final ? 'webhook delivery gave up' : 'webhook delivery failed, will retry');
    });
    worker.on('error', (error) => repeats(`${name} ${error.message}`, (repeated) => log.error({ err: error, webhook: describeUrl(url), repeated }, 'webhooks: worker error')));
    workers.push(worker);
  }

  let running = true;
  let beginClose!: () => void;
  const closing = new Promise<void>((resolve) => (beginClose = resolve));
  const dispatchers = [...queues].map(([url, queue]) =>
    startDispatcher({ connection, streamKey, url, queue, consumer, claimIdleMs, blockMs, maxQueued, log, isRunning: () => running, closing }),
  );
  const ready = Promise.all(dispatchers.map((d) => d.ready)).then(() => undefined);

  return {
    ready,
    queues,
    async close(timeoutMs?: number) {
      running = false;
      beginClose();
      await Promise.all(dispatchers.map((dispatcher) => dispatcher.stop()));
      // Active deliveries finish (each is bounded by the delivery timeout) within `timeoutMs`; the rest wait in the
      // queue for the next worker.
      await closeWorkers(workers, timeoutMs);
      await Promise.all([...queues.values()].map((queue) => queue.close()));
      // A consumer with nothing pending can go; one with pending entries stays so that they get claimed.
      for (const { group, made } of dispatchers) {
        if (!made()) continue; // never made (Redis was down from the start): no consumer of ours in it
        const pending = (await (connection as Redis).xpending(streamKey, group, '-', '+', 1, consumer).catch(() => [1])) as unknown[];
        if (pending.length === 0) await (connection as Redis).xgroup('DELCONSUMER', streamKey, group, consumer).catch(() => undefined);
      }
    },
  };
}
