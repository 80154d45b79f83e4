/**
 * Webhooks (DESIGN §7): every event is POSTed as JSON to every `WEBHOOK_URLS` entry, signed
 * `X-Kyozo-Signature: sha256=<hex HMAC-SHA256 of the body with WEBHOOK_SECRET>`.
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
 * The group is made again when it is gone — the stream key vanished with it (a Redis restart without persistence, a
 * flush, a failover to an empty replica) and was made anew by the next event — from the new stream's start. An
 * entry that is not an event this service wrote is acknowledged and skipped, never retried forever in front of the
 * events read with it. Consumers of processes that died are removed once they hold nothing and have been idle for
 * `CONSUMER_IDLE_FACTOR` claim periods.
 *
 * A redirect is a failed delivery, not followed: fetch would follow a 301/302/303 with a body-less GET. URLs are
 * logged and reported by origin and hash only: a webhook URL often carries its receiver's secret in its path.
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
/** A consumer idle for this many claim periods, with nothing pending, belonged to a process that is gone. */
const CONSUMER_IDLE_FACTOR = 10;

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

interface Dispatcher {
  group: string;
  reader: Redis;
  /** The group exists. */
  ready: Promise<void>;
  loop: Promise<void>;
}

function urlTag(url: string): string {
  return createHash('sha256').update(url).digest('hex').slice(0, 12);
}

/** The delivery queue of one URL (the board shows it; the worker process delivers from it), and its consumer group. */
export function webhookQueueName(url: string): string {
  return `${WEBHOOK_QUEUE}-${urlTag(url)}`;
}

/** A URL as logs and job failures show it: its origin and hash, not a path or query that may hold a secret. */
function describeUrl(url: string): string {
  return `${new URL(url).origin} (${webhookQueueName(url)})`;
}

/**
 * Removes the group's consumers, other than ARGV[2], that hold nothing and were idle longer than ARGV[3] ms. In one
 * script, because removing a consumer drops what it holds: one that read entries since it was looked at must stay.
 * A live but quiet consumer may go too; Redis makes it again at its next read.
 */
const PRUNE_CONSUMERS = `
for _, fields in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #fields, 2 do info[fields[i]] = fields[i + 1] end
  if info['name'] ~= ARGV[2] and info['pending'] == 0 and info['idle'] > tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
  end
end
return 0
`;

/** The stream or its group is gone (`UNBLOCKED` when the key is deleted under a blocking read). */
const GROUP_GONE = /NOGROUP|UNBLOCKED/;

export function startWebhooks(options: WebhooksOptions): Webhooks {
  const { connection, prefix, streamKey, urls, secret, log } = options;
  const blockMs = options.blockMs ?? 2_000;
  const claimIdleMs = options.claimIdleMs ?? 60_000;
  const consumer = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;

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
    if (!response.ok) throw new Error(`${describeUrl(url)} answered ${response.status}${location === null ? '' : ` (Location: ${location})`}`);
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
      log[final ? 'error' : 'warn']({ webhook: describeUrl(url), eventId: job?.data.eventId, attemptsMade: job?.attemptsMade, err: error }, final ? 'webhook delivery gave up' : 'webhook delivery failed, will retry');
    });
    worker.on('error', (error) => log.error({ err: error, webhook: describeUrl(url) }, 'webhooks: worker error'));
    workers.push(worker);
  }

  /** Reads the stream through `url`'s own consumer group and adds a delivery job per event to its queue. */
  /**
   * Reads the stream through `url`'s own consumer group, on a connection of its own (a blocking read holds up every
   * command behind it), and adds a delivery job per event to its queue.
   */
  function dispatcher(url: string, queue: Queue<Delivery>): Dispatcher {
    const group = webhookQueueName(url);
    const reader: Redis = (connection as Redis).duplicate();
    reader.on('error', (error: Error) => log.warn({ err: error, webhook: describeUrl(url) }, 'webhooks: stream reader connection error'));
    /** The newest entry this dispatcher has seen: a group made again resumes after it. */
    let lastSeen = '0';
    const createGroup = (from: string) =>
      reader
        .xgroup('CREATE', streamKey, group, from, 'MKSTREAM')
        .then(() => undefined)
        .catch((error: Error) => {
          if (!/BUSYGROUP/.test(error.message)) throw error;
        });
    /** Where the group stands once it exists (made now, or kept from earlier runs). */
    const readPosition = async () => {
      const groups = (await reader.xinfo('GROUPS', streamKey)) as (string | number)[][];
      const fields = groups.find((info) => info[info.indexOf('name') + 1] === group);
      const position = fields?.[fields.indexOf('last-delivered-id') + 1];
      if (typeof position === 'string') lastSeen = position;
    };

    async function dispatch(entries: StreamEntry[]): Promise<void> {
      if (entries.length === 0) return;
      lastSeen = entries[entries.length - 1]![0];
      const events = entries.flatMap(([id, fields]) => envelopeFromEntry(id, fields) ?? []);
      if (events.length < entries.length) log.warn({ webhook: describeUrl(url), skipped: entries.length - events.length }, 'webhooks: skipped stream entries that are not events');
      if (events.length > 0) {
        await queue.addBulk(
          events.map((event) => ({
            name: 'deliver',
            data: { url, type: event.type, eventId: event.id, body: JSON.stringify(event) },
            opts: { jobId: `${event.id}.${urlTag(url)}` },
          })),
        );
      }
      await reader.xack(streamKey, group, ...entries.map(([id]) => id));
    }

    /** Takes over what dead consumers left unacknowledged, then removes those consumers. */
    async function claimAbandoned(): Promise<void> {
      const [, claimed] = (await reader.xautoclaim(streamKey, group, consumer, claimIdleMs, '0-0', 'COUNT', 100)) as [string, StreamEntry[]];
      await dispatch(claimed.filter((entry) => entry !== null && Array.isArray(entry[1])));
      await reader.eval(PRUNE_CONSUMERS, 1, streamKey, group, consumer, claimIdleMs * CONSUMER_IDLE_FACTOR);
    }

    // From the newest event: a URL added to the list gets the events from now on, not the whole history.
    const ready = createGroup('$').then(readPosition);
    const loop = (async () => {
      await ready;
      let lastClaim = 0;
      while (running) {
        try {
          if (Date.now() - lastClaim >= claimIdleMs / 2) {
            lastClaim = Date.now();
            await claimAbandoned();
          }
          const read = (await reader.xreadgroup('GROUP', group, consumer, 'COUNT', 100, 'BLOCK', blockMs, 'STREAMS', streamKey, '>')) as
            | [string, StreamEntry[]][]
            | null;
          for (const [, entries] of read ?? []) await dispatch(entries);
        } catch (error) {
          if (!running) break;
          if (GROUP_GONE.test((error as Error).message)) {
            // Made again after the last entry seen: a stream lost and made anew by a later event holds only newer
            // entries (their ids are times), and a group deleted by hand resumes where it was, not from the start.
            log.warn({ err: error, webhook: describeUrl(url) }, 'webhooks: the events stream lost its consumer group; making it again');
            const made = await createGroup(lastSeen).then(
              () => true,
              (createError: unknown) => (log.warn({ err: createError }, 'webhooks: cannot make the consumer group again'), false),
            );
            if (made) continue;
          } else {
            log.warn({ err: error, webhook: describeUrl(url) }, 'webhooks: reading the events stream failed; retrying');
          }
          await new Promise((resolve) => setTimeout(resolve, 1_000));
        }
      }
    })();
    ready.catch((error: unknown) => log.error({ err: error, webhook: describeUrl(url) }, 'webhooks: cannot create the consumer group'));
    return { group, reader, ready, loop };
  }

  let running = true;
  const dispatchers = [...queues].map(([url, queue]) => dispatcher(url, queue));
  const ready = Promise.all(dispatchers.map((d) => d.ready)).then(() => undefined);

  return {
    ready,
    queues,
    async close() {
      running = false;
      for (const { reader } of dispatchers) reader.disconnect();
      await Promise.all(dispatchers.map((d) => d.loop.catch(() => undefined)));
      // Active deliveries finish (each is bounded by `timeoutMs`); the rest wait in the queue for the next worker.
      await Promise.all(workers.map((worker) => worker.close()));
      await Promise.all([...queues.values()].map((queue) => queue.close()));
      // A consumer with nothing pending can go; one with pending entries stays so that they get claimed.
      for (const { group } of dispatchers) {
        const pending = (await (connection as Redis).xpending(streamKey, group, '-', '+', 1, consumer).catch(() => [1])) as unknown[];
        if (pending.length === 0) await (connection as Redis).xgroup('DELCONSUMER', streamKey, group, consumer).catch(() => undefined);
      }
    },
  };
}
