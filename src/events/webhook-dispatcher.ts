/**
 * One webhook URL's dispatcher (see `webhooks.ts`): it reads the events stream through the URL's own consumer group,
 * on a connection of its own, and adds a delivery job per event to the URL's queue. It takes over entries that dead
 * consumers left unacknowledged, removes those consumers, skips entries that are not events, and makes its group
 * again when the stream lost it. While the URL's queue holds `maxQueued` deliveries it reads no more: the group's
 * position keeps the place (an event in the stream costs a quarter of a delivery job, and is shared by every URL).
 * Events trimmed from the stream before the group read them are reported, with how many.
 */
import { createHash } from 'node:crypto';
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { onceEvery, REPEATED_ERROR_LOG_MS, type Logger } from '../log.js';
import type { RedisConnection } from '../redis.js';
import { envelopeFromEntry, streamGroups } from './bus.js';

/** The delivery job of one event for one URL, as `webhooks.ts` delivers it. */
export interface Delivery {
  url: string;
  type: string;
  eventId: string;
  /** The event envelope as JSON: exactly the bytes that are signed and sent. */
  body: string;
}

export interface DispatcherOptions {
  /** Duplicated for the blocking reads. */
  connection: RedisConnection;
  streamKey: string;
  url: string;
  queue: Queue<Delivery>;
  /** This process's consumer name. */
  consumer: string;
  /** An entry another consumer read but did not acknowledge for this long is taken over. */
  claimIdleMs: number;
  /** How long one blocking read waits. */
  blockMs: number;
  /** Deliveries waiting in the URL's queue at which the dispatcher stops reading the stream until they go down. */
  maxQueued: number;
  log: Logger;
  /** False once the webhooks are closing. */
  isRunning(): boolean;
  /** Settles when the webhooks begin to close: a dispatcher still making its group (Redis down) stops waiting. */
  closing: Promise<void>;
}

export interface Dispatcher {
  group: string;
  /** The group exists. */
  ready: Promise<void>;
  /** Whether `ready` has settled well: a group that was never made has no consumer to remove at close. */
  made(): boolean;
  /** Ends the loop once `isRunning()` is false: its blocking read is cut short, what it read is still queued. */
  stop(): Promise<void>;
}

type StreamEntry = [id: string, fields: string[]];

const WEBHOOK_QUEUE = 'webhooks';
const WEBHOOK_QUEUE_NAME = new RegExp(`^${WEBHOOK_QUEUE}-[0-9a-f]{12}$`);

/** A consumer idle for this many claim periods, with nothing pending, belonged to a process that is gone. */
const CONSUMER_IDLE_FACTOR = 10;

export function urlTag(url: string): string {
  return createHash('sha256').update(url).digest('hex').slice(0, 12);
}

/** The delivery queue of one URL (the board shows it; the worker process delivers from it), and its consumer group. */
export function webhookQueueName(url: string): string {
  return `${WEBHOOK_QUEUE}-${urlTag(url)}`;
}

/** A queue (and consumer group) of some webhook URL, listed now or not. */
export function isWebhookQueueName(name: string): boolean {
  return WEBHOOK_QUEUE_NAME.test(name);
}

/** A URL as logs and job failures show it: its origin and hash, not a path or query that may hold a secret. */
export function describeUrl(url: string): string {
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

/**
 * Before a read of new entries: how many entries after the group's last-delivered id (ARGV[1] the group, KEYS[1] the
 * stream) were trimmed before the group read them. Trimming takes the oldest entries, so some were exactly when
 * none at or before that id remains; how many is what was ever added, less what the stream holds and what the group
 * read (Redis 7's counters). 0 when none (or Redis 6, which keeps no counters), -1 when some were but the group's
 * read counter is not known (a group made at an id). A count found is added to the group's read counter, so that
 * the next check starts from it and the group's `lag` stays true.
 */
const TRIMMED_SCRIPT = `
local last, read
for _, fields in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #fields, 2 do info[fields[i]] = fields[i + 1] end
  if info['name'] == ARGV[1] then last, read = info['last-delivered-id'], info['entries-read'] end
end
if last == nil then return 0 end
local length = redis.call('XLEN', KEYS[1])
if length == 0 or #redis.call('XRANGE', KEYS[1], '-', last, 'COUNT', 1) > 0 then return 0 end
local stream = {}
local fields = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #fields, 2 do stream[fields[i]] = fields[i + 1] end
local added = stream['entries-added']
if type(added) ~= 'number' or added == length then return 0 end
if type(read) ~= 'number' then return -1 end
local lost = added - length - read
if lost <= 0 then return 0 end
redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], last, 'ENTRIESREAD', added - length)
return lost
`;

/**
 * Makes the group (KEYS[1] the stream, ARGV[1] the group, ARGV[2] its start). From the newest entry ('$'), its read
 * counter is set to what the stream was ever added, so that `TRIMMED_SCRIPT` can count what it misses from the start
 * (Redis 7; a group made at an id has no known counter).
 */
const CREATE_GROUP_SCRIPT = `
local args = { 'XGROUP', 'CREATE', KEYS[1], ARGV[1], ARGV[2], 'MKSTREAM' }
if ARGV[2] == '$' and redis.REDIS_VERSION_NUM ~= nil and redis.REDIS_VERSION_NUM >= 0x070000 then
  local added = 0
  if redis.call('EXISTS', KEYS[1]) == 1 then
    local fields = redis.call('XINFO', 'STREAM', KEYS[1])
    for i = 1, #fields, 2 do if fields[i] == 'entries-added' then added = fields[i + 1] end end
  end
  table.insert(args, 'ENTRIESREAD')
  table.insert(args, added)
end
redis.call(unpack(args))
return 0
`;

/** A stopping dispatcher's read still going after this (Redis unreachable) is cut with its connection. */
const STOP_GRACE_MS = 1_000;

/** The stream or its group is gone (`UNBLOCKED` when the key is deleted under a blocking read). */
const GROUP_GONE = /NOGROUP|UNBLOCKED/;

/**
 * Reads the stream through `url`'s own consumer group, on a connection of its own (a blocking read holds up every
 * command behind it), and adds a delivery job per event to its queue.
 */
export function startDispatcher(options: DispatcherOptions): Dispatcher {
  const { connection, streamKey, url, queue, consumer, claimIdleMs, blockMs, maxQueued, log, isRunning, closing } = options;
  const group = webhookQueueName(url);
  const reader: Redis = (connection as Redis).duplicate();
  reader.on('error', (error: Error) => log.warn({ err: error, webhook: describeUrl(url) }, 'webhooks: stream reader connection error'));
  /** The newest entry this dispatcher has seen: a group made again resumes after it. */
  let lastSeen = '0';
  /** The reader's client id, for `CLIENT UNBLOCK` (a reconnect gives it a new one). */
  let readerId: string | undefined;
  reader.on('ready', () => void reader.client('ID').then((id) => void (readerId = String(id)), () => undefined));
  const createGroup = (from: string) =>
    reader
      .eval(CREATE_GROUP_SCRIPT, 1, streamKey, group, from)
      .then(() => undefined)
      .catch((error: Error) => {
        if (!/BUSYGROUP/.test(error.message)) throw error;
      });
  /** Where the group stands once it exists (made now, or kept from earlier runs). */
  const readPosition = async () => {
    lastSeen = (await streamGroups(reader, streamKey)).find((candidate) => candidate.name === group)?.lastDeliveredId ?? lastSeen;
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

  /** Events this URL will never get: trimmed from the stream before the group read them, or before a claim. */
  function reportLost(lost: number, why: string): void {
    const count = lost < 0 ? 'an unknown number of' : String(lost);
    log.error({ webhook: describeUrl(url), lost: lost < 0 ? undefined : lost, after: lastSeen }, `webhooks: ${count} events ${why}: never delivered (EVENTS_MAXLEN)`);
  }

  /** Takes over what dead consumers left unacknowledged, then removes those consumers. */
  async function claimAbandoned(): Promise<void> {
    const [, claimed, trimmed] = (await reader.xautoclaim(streamKey, group, consumer, claimIdleMs, '0-0', 'COUNT', 100)) as [string, StreamEntry[], string[]?];
    // Redis 7 names the pending entries that are no longer in the stream, and drops them from the group.
    if (trimmed !== undefined && trimmed.length > 0) reportLost(trimmed.length, 'another consumer had read were trimmed from the stream before they were taken over');
    await dispatch(claimed.filter((entry) => entry !== null && Array.isArray(entry[1])));
    await reader.eval(PRUNE_CONSUMERS, 1, streamKey, group, consumer, claimIdleMs * CONSUMER_IDLE_FACTOR);
  }

  /** The same backlog once a period. */
  const repeats = onceEvery(REPEATED_ERROR_LOG_MS);
  /** Whether the URL's queue has room for another read's deliveries; if not, waits a read's time. */
  async function queueHasRoom(): Promise<boolean> {
    const queued = await queue.count();
    if (queued < maxQueued) return true;
    repeats('backlog', (repeated) =>
      log.warn({ webhook: describeUrl(url), queued, repeated }, 'webhooks: the URL is behind; its events wait in the stream until its deliveries go down'),
    );
    await Promise.race([new Promise((resolve) => setTimeout(resolve, blockMs)), closing]);
    return false;
  }

  // From the newest event: a URL added to the list gets the events from now on, not the whole history.
  let made = false;
  const ready = createGroup('$')
    .then(readPosition)
    .then(() => void (made = true));
  const loop = (async () => {
    await Promise.race([ready, closing]);
    let lastClaim = 0;
    while (isRunning()) {
      try {
        if (Date.now() - lastClaim >= claimIdleMs / 2) {
          lastClaim = Date.now();
          await claimAbandoned();
        }
        if (!(await queueHasRoom())) continue;
        const lost = Number(await reader.eval(TRIMMED_SCRIPT, 1, streamKey, group));
        if (lost !== 0) reportLost(lost, 'were trimmed from the stream before this URL read them');
        if (!isRunning()) break; // `stop` unblocks a read already sent; one sent after it would block a whole period
        const read = (await reader.xreadgroup('GROUP', group, consumer, 'COUNT', 100, 'BLOCK', blockMs, 'STREAMS', streamKey, '>')) as
          | [string, StreamEntry[]][]
          | null;
        for (const [, entries] of read ?? []) await dispatch(entries);
      } catch (error) {
        if (!isRunning()) break;
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

  async function stop(): Promise<void> {
    // Unblocked, not disconnected: entries Redis has handed to a read are pending in the group, and a read whose
    // answer died with its connection would leave them for a claim period (a minute), delivered out of order.
    if (readerId !== undefined) void (connection as Redis).client('UNBLOCK', readerId).catch(() => undefined);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([loop, new Promise((resolve) => (timer = setTimeout(resolve, blockMs + STOP_GRACE_MS)))]);
    clearTimeout(timer);
    reader.disconnect();
    await loop.catch(() => undefined);
  }
  return { group, ready, made: () => made, stop };
}
