/**
 * Webhooks (DESIGN §7): every event is POSTed as JSON to every `WEBHOOK_URLS` entry, signed
 * `X-Kyozo-Signature: sha256=<hex HMAC-SHA256 of the body with WEBHOOK_SECRET>`.
 *
 * Two stages. A dispatcher reads the events stream through a Redis consumer group (`webhooks`) and turns each
 * event into one BullMQ job per URL, on that URL's own queue (`webhooks-<url hash>`); a worker per queue delivers
 * them with retries and exponential backoff. A queue per URL keeps a receiver that hangs or fails from taking the
 * slots of the others. The consumer group (rather than pub/sub) means no event is missed while no worker process
 * runs, and several worker processes share the stream instead of each delivering everything. An entry is acknowledged only
 * after its jobs were added; if a dispatcher dies in between, another claims the entry after `claimIdleMs` and adds
 * them again, which is harmless: the job id is `<event id>.<url hash>`, and BullMQ ignores a second add of an id.
 *
 * A redirect is a failed delivery, not followed: fetch would follow a 301/302/303 with a body-less GET.
 *
 * Delivery failures are logged, not emitted as `job.failed`: that event would itself be delivered to the same
 * failing receiver, and so on.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { hostname } from 'node:os';
import { Queue, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from '../log.js';
import { takeConnectionErrors, type RedisConnection } from '../redis.js';
import { envelopeFromEntry } from './bus.js';

const WEBHOOK_QUEUE = 'webhooks';
export const SIGNATURE_HEADER = 'X-Kyozo-Signature';
const GROUP = 'webhooks';

export function signBody(body: string, secret: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

/** Constant-time check of a `X-Kyozo-Signature` header, for receivers (and tests). */
export function verifySignature(body: string, header: string | undefined, secret: string): boolean {
  if (header === undefined) return false;
  const expected = Buffer.from(signBody(body, secret));
  const given = Buffer.from(header);
  return expected.length === given.length && timingSafeEqual(expected, given);
}

export interface Delivery {
  url: string;
  type: string;
  eventId: string;
  /** The event envelope as JSON: exactly the bytes that are signed and sent. */
  body: string;
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
}

export interface Webhooks {
  /** Resolves once the consumer group exists: events emitted from then on will be delivered. */
  ready: Promise<void>;
  /** The delivery queue of each URL. */
  queues: ReadonlyMap<string, Queue<Delivery>>;
  /** Stops reading events, lets active deliveries finish, closes the queues and workers. */
  close(): Promise<void>;
}

type StreamEntry = [id: string, fields: string[]];

function urlTag(url: string): string {
  return createHash('sha256').update(url).digest('hex').slice(0, 12);
}

/** The delivery queue of one URL (the board shows it; the worker process delivers from it). */
export function webhookQueueName(url: string): string {
  return `${WEBHOOK_QUEUE}-${urlTag(url)}`;
}

export function startWebhooks(options: WebhooksOptions): Webhooks {
  const { connection, prefix, streamKey, urls, secret, log } = options;
  const blockMs = options.blockMs ?? 2_000;
  const claimIdleMs = options.claimIdleMs ?? 60_000;
  const consumer = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  const reader: Redis = (connection as Redis).duplicate();
  reader.on('error', (error: Error) => log.warn({ err: error }, 'webhooks: stream reader connection error'));

  async function deliver(job: Job<Delivery>): Promise<{ status: number }> {
    const { url, body, type, eventId } = job.data;
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'user-agent': 'kyozo-webhooks',
      'x-kyozo-event': type,
      'x-kyozo-event-id': eventId,
      'x-kyozo-delivery': job.id ?? '',
    };
    if (secret !== undefined) headers[SIGNATURE_HEADER.toLowerCase()] = signBody(body, secret);
    const response = await fetch(url, { method: 'POST', headers, body, redirect: 'manual', signal: AbortSignal.timeout(options.timeoutMs ?? 10_000) });
    await response.body?.cancel();
    const location = response.headers.get('location');
    if (!response.ok) throw new Error(`${url} answered ${response.status}${location === null ? '' : ` (Location: ${location})`}`);
    return { status: response.status };
  }

  const queues = new Map<string, Queue<Delivery>>();
  const workers: Worker<Delivery>[] = [];
  for (const url of new Set(urls)) {
    const name = webhookQueueName(url);
    const queue = new Queue<Delivery>(name, {
      connection,
      prefix,
      defaultJobOptions: {
        attempts: options.attempts ?? 10,
        backoff: { type: 'exponential', delay: options.backoffDelayMs ?? 1_000, jitter: 0.5 },
        removeOnComplete: { age: 24 * 3600, count: 10_000 },
        removeOnFail: { age: 7 * 24 * 3600, count: 10_000 },
      },
    });
    queues.set(url, takeConnectionErrors(queue));
    const worker = new Worker<Delivery>(name, deliver, { connection, prefix, concurrency: options.concurrency ?? 10 });
    worker.on('failed', (job, error) => {
      const final = job !== undefined && job.attemptsMade >= (job.opts.attempts ?? 1);
      log[final ? 'error' : 'warn']({ url, eventId: job?.data.eventId, attemptsMade: job?.attemptsMade, err: error }, final ? 'webhook delivery gave up' : 'webhook delivery failed, will retry');
    });
    worker.on('error', (error) => log.error({ err: error, url }, 'webhooks: worker error'));
    workers.push(worker);
  }

  async function dispatch(entries: StreamEntry[]): Promise<void> {
    if (entries.length === 0) return;
    const events = entries.flatMap(([id, fields]) => envelopeFromEntry(id, fields) ?? []);
    if (events.length > 0) {
      await Promise.all(
        [...queues].map(([url, queue]) =>
          queue.addBulk(
            events.map((event) => ({
              name: 'deliver',
              data: { url, type: event.type, eventId: event.id, body: JSON.stringify(event) },
              opts: { jobId: `${event.id}.${urlTag(url)}` },
            })),
          ),
        ),
      );
    }
    await reader.xack(streamKey, GROUP, ...entries.map(([id]) => id));
  }

  let running = true;
  const ready = reader
    .xgroup('CREATE', streamKey, GROUP, '$', 'MKSTREAM')
    .then(() => undefined)
    .catch((error: Error) => {
      if (!/BUSYGROUP/.test(error.message)) throw error;
    });

  const loop = (async () => {
    await ready;
    let lastClaim = 0;
    while (running) {
      try {
        if (Date.now() - lastClaim >= claimIdleMs / 2) {
          lastClaim = Date.now();
          const [, claimed] = (await reader.xautoclaim(streamKey, GROUP, consumer, claimIdleMs, '0-0', 'COUNT', 100)) as [string, StreamEntry[]];
          await dispatch(claimed.filter((entry) => entry !== null && Array.isArray(entry[1])));
        }
        const read = (await reader.xreadgroup('GROUP', GROUP, consumer, 'COUNT', 100, 'BLOCK', blockMs, 'STREAMS', streamKey, '>')) as
          | [string, StreamEntry[]][]
          | null;
        for (const [, entries] of read ?? []) await dispatch(entries);
      } catch (error) {
        if (!running) break;
        log.warn({ err: error }, 'webhooks: reading the events stream failed; retrying');
        await new Promise((resolve) => setTimeout(resolve, 1_000));
      }
    }
  })();
  ready.catch((error: unknown) => log.error({ err: error }, 'webhooks: cannot create the consumer group'));

  return {
    ready,
    queues,
    async close() {
      running = false;
      reader.disconnect();
      await loop.catch(() => undefined);
      // Active deliveries finish (each is bounded by `timeoutMs`); the rest wait in the queue for the next worker.
      await Promise.all(workers.map((worker) => worker.close()));
      await Promise.all([...queues.values()].map((queue) => queue.close()));
      // A consumer with nothing pending can go; one with pending entries stays so that they get claimed.
      const pending = (await (connection as Redis).xpending(streamKey, GROUP, '-', '+', 1, consumer).catch(() => [1])) as unknown[];
      if (pending.length === 0) await (connection as Redis).xgroup('DELCONSUMER', streamKey, GROUP, consumer).catch(() => undefined);
    },
  };
}
