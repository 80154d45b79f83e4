/**
 * The event bus (DESIGN §7): every event is appended to one capped Redis Stream (`<prefix>:events`, the history
 * that SSE resumes from with `Last-Event-ID` and webhooks consume through a consumer group) and published on
 * `<prefix>:events:live` for in-process listeners. The envelope's `id` is the stream entry id, so it orders events
 * and is what `readSince` takes.
 *
 * Append and publish happen in one Lua script, so no listener sees an event that is not in the history. Events
 * emitted in the same turn of the event loop (jobs finishing together) share one script call and one PUBLISH of a
 * JSON array: per event that saves a round trip, a script invocation and a pub/sub message, which is most of what
 * an event costs (measured in bench/pipeline.ts). `emit` can also be made idempotent with `once: { key, field }`: the script records the new
 * event's id in that hash field and skips the emit when the field is already set. The worker points it at the
 * job's own BullMQ hash, so a job retried after a crash between its emit and its completion does not emit twice,
 * and the marker disappears with the job (no extra keys to expire). The marker hash and the stream must live in
 * one Cluster slot: a hash-tagged prefix such as `{kyozo}` (the default) does that.
 *
 * Pub/sub forgets what it published while the subscriber connection was away, so after a reconnect the bus reads
 * the stream from the last event it delivered and hands listeners the missed events first, then the live ones;
 * an event at or before the last one delivered is dropped, so none comes twice.
 */
import type { Redis } from 'ioredis';
import type { Logger } from '../log.js';
import { whenReady, type RedisConnection } from '../redis.js';
import { nowIso } from '../clock.js';

export const EVENT_TYPES = [
  'object.written',
  'object.deleted',
  'objects.deleted',
  'version.created',
  'version.restored',
  'job.failed',
  'tier.completed',
  'cleanup.completed',
  'backup.completed',
  'backup.restored',
  'migration.completed',
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

export interface EventEnvelope<T = unknown> {
  /** The Redis Stream entry id: ordered, and the resume point of `readSince`. */
  id: string;
  type: EventType;
  /** ISO 8601. */
  at: string;
  store?: string;
  key?: string;
  jobId?: string;
  data: T;
}

export type EventInput<T = unknown> = Omit<EventEnvelope<T>, 'id' | 'at'> & { at?: string };

export interface EmitOptions {
  /**
   * Emit at most once for this hash field; the hash must exist for the marker to be kept. `alsoSet`: more fields
   * written into that hash with the marker, in the same script (a completed job's result, its data without its body).
   */
  once?: { key: string; field: string; alsoSet?: Record<string, string> };
  /**
   * Called once the event's script is written to the bus's connection, before its reply: Redis runs a connection's
   * commands in order, so a command sent on the same connection after this runs after the event.
   */
  onWritten?: () => void;
}

export type EventListener = (event: EventEnvelope) => void;
export type Unsubscribe = () => Promise<void>;

export interface EventBus {
  readonly streamKey: string;
  /** The connection events are appended on (see `onWritten`). */
  readonly connection: RedisConnection;
  /** Appends and publishes; returns the envelope, or `undefined` when `once` says it was emitted before. */
  emit<T>(event: EventInput<T>, opts?: EmitOptions): Promise<EventEnvelope<T> | undefined>;
  /** Live events of one type, of `types`, or of all ('*'). Resolves once the subscription is active. */
  subscribe(types: EventType | readonly EventType[] | '*', listener: EventListener): Promise<Unsubscribe>;
  /** The event with this id, or `undefined` when the capped stream no longer holds it. */
  read(id: string): Promise<EventEnvelope | undefined>;
  /** History after `id` (exclusive; from the start when undefined), oldest first, at most `count` events. */
  readSince(id: string | undefined, types?: readonly EventType[] | '*', count?: number): Promise<EventEnvelope[]>;
  /**
   * The stream's newest and oldest entry ids, and whether entries were ever removed from it (trimmed past `maxLen`):
   * a reader resuming from before the oldest has then missed events. Ids undefined for a stream with no entries.
   * `wholeSince`: the point from which the stream holds every event appended (`markWholeSince`), when known.
   */
  bounds(): Promise<{ last?: string; oldest?: string; trimmed: boolean; wholeSince?: string }>;
  /**
   * Records that the stream holds every event from now on, when it holds none yet (new, or made again after it was
   * lost): a resume point after now, in a stream never trimmed, has then missed nothing, even before the first event.
   * Processes call it as they start; a no-op on a stream that has entries or the mark.
   */
  markWholeSince(): Promise<void>;
  /** Live listeners now subscribed (an SSE client that left must not leave one behind). */
  listenerCount(): number;
  close(): Promise<void>;
}

export interface EventBusOptions {
  /** Commands connection; the subscriber connection is duplicated from it on first `subscribe`. */
  redis: RedisConnection;
  prefix: string;
  /** Approximate cap of the stream (`XADD MAXLEN ~`). */
  maxLen: number;
  log?: Logger;
}

/**
 * Appends a batch of events, publishes them as one JSON array, and honours once-markers. KEYS[1] is the stream,
 * KEYS[2..] the marker hashes. ARGV: maxlen, channel, then per event: type, envelope JSON without id (it starts
 * with '{'), index of its marker in KEYS ('0' = none), marker field, a count n, and n field/value pairs set with the
 * marker (in the same HSET). Returns one answer per event: its id, '' when skipped because its marker was set, or
 * '!' and the error. Each event stands alone (`pcall`): a Redis error on one (a marker key of another type) would
 * otherwise end the script after the earlier events were appended but before they were published, their emits
 * rejected and their markers set — never delivered live, nor emitted again.
 */
const EMIT_SCRIPT = `
local published = {}
local answers = {}
local base = 3
local function failed(reply) return type(reply) == 'table' and reply.err ~= nil end
while base <= #ARGV do
  local marker = tonumber(ARGV[base + 2])
  local first = base + 5
  local last = first + 2 * tonumber(ARGV[base + 4]) - 1
  local previous = false
  if marker > 0 then previous = redis.pcall('HGET', KEYS[marker], ARGV[base + 3]) end
  local answer
  if failed(previous) then
    answer = '!' .. previous.err
  elseif previous then
    answer = ''
  else
    local id = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'type', ARGV[base], 'e', ARGV[base + 1])
    if failed(id) then
      answer = '!' .. id.err
    else
      answer = id
      -- The HGET above found a hash (or nothing): this HSET cannot fail on the key's type.
      if marker > 0 and redis.call('EXISTS', KEYS[marker]) == 1 then
        redis.call('HSET', KEYS[marker], ARGV[base + 3], id, unpack(ARGV, first, last))
      end
      published[#published + 1] = '{"id":"' .. id .. '",' .. string.sub(ARGV[base + 1], 2)
    end
  end
  answers[#answers + 1] = answer
  base = last + 1
end
if #published > 0 then redis.call('PUBLISH', ARGV[2], '[' .. table.concat(published, ',') .. ']') end
return answers
`;

/**
 * The mark of `markWholeSince`, kept as a consumer group of the stream whose last-delivered id is the moment marked
 * (no one reads through it): it lives in the stream's key, so it is lost with the stream, never left behind by it.
 */
const WHOLE_SINCE = 'kyozo:whole-since';
/** KEYS[1] the stream, ARGV[1] the mark's group name. Marks now (Redis's clock) on a stream without entries or mark. */
const MARK_SCRIPT = `
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('XLEN', KEYS[1]) > 0 then return 0 end
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    if group[2] == ARGV[1] then return 0 end
  end
end
local now = redis.call('TIME')
local id = now[1] .. string.format('%03d', math.floor(tonumber(now[2]) / 1000)) .. '-0'
redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], id, 'MKSTREAM')
return 1
`;

/** Events emitted in the same turn of the event loop share one script call, up to this many. */
const MAX_BATCH = 128;
/** Events read per page when a reconnected subscriber catches up. */
const CATCH_UP_PAGE = 500;
const CATCH_UP_RETRY_MS = 1_000;
/**
 * How long the first subscription waits for its own connection: an SSE request waits as long, then gets 503 and
 * retries (a Redis at maxclients takes no new connection while the others still work).
 */
const SUBSCRIBER_READY_TIMEOUT_MS = 5_000;

type EmitCommand = (numKeys: number, ...args: string[]) => Promise<string[]>;

/**
 * The script goes as EVAL, not EVALSHA: after a Redis restart EVALSHA answers NOSCRIPT and ioredis sends the script
 * again a round trip later, behind whatever was sent meanwhile (a job's completion, see `onWritten`). Redis keeps
 * EVAL scripts compiled by digest, so sending the text costs only its bytes.
 */
function emitCommand(redis: RedisConnection): EmitCommand {
  return (numKeys, ...args) => redis.eval(EMIT_SCRIPT, numKeys, ...args) as Promise<string[]>;
}

interface Pending {
  type: EventType;
  body: Omit<EventEnvelope, 'id'>;
  json: string;
  once?: EmitOptions['once'];
  onWritten?: () => void;
  resolve(envelope: EventEnvelope | undefined): void;
  reject(error: unknown): void;
}

/** Two unsigned decimal numbers of any size (Redis ids go to 2^64 - 1, past a double's 2^53) compared exactly. */
function compareDecimal(a: string, b: string): number {
  const x = a.length > 1 && a.startsWith('0') ? a.replace(/^0+(?=\d)/, '') : a;
  const y = b.length > 1 && b.startsWith('0') ? b.replace(/^0+(?=\d)/, '') : b;
  return x.length - y.length || (x < y ? -1 : x > y ? 1 : 0);
}

/** Stream ids are `<ms>-<seq>`: compare numerically, both parts. */
export function streamIdAfter(a: string, b: string): boolean {
  const aDash = a.indexOf('-');
  const bDash = b.indexOf('-');
  const ms = compareDecimal(a.slice(0, aDash), b.slice(0, bDash));
  return ms > 0 || (ms === 0 && compareDecimal(a.slice(aDash + 1), b.slice(bDash + 1)) > 0);
}

function matches(types: readonly EventType[] | '*', type: string): boolean {
  return types === '*' || (types as readonly string[]).includes(type);
}

/** An `XINFO` of a stream that does not exist (yet, or any more) as an empty reply. */
function noStream(error: Error): [] {
  if (/no such key/i.test(error.message)) return [];
  throw error;
}

/** A consumer group of a stream, as `XINFO GROUPS` describes it. */
export interface StreamGroup {
  name: string;
  /** The newest entry handed to one of its consumers. */
  lastDeliveredId: string;
}

/** The consumer groups of `streamKey`; none for a stream that does not exist. */
export async function streamGroups(redis: RedisConnection, streamKey: string): Promise<StreamGroup[]> {
  const reply = (await redis.xinfo('GROUPS', streamKey).catch(noStream)) as unknown[][];
  return reply.map((fields) => {
    const field = (name: string) => String(fields[fields.indexOf(name) + 1]);
    return { name: field('name'), lastDeliveredId: field('last-delivered-id') };
  });
}

function isEnvelope(value: unknown): value is EventEnvelope {
  const event = value as Partial<EventEnvelope> | null;
  return typeof event === 'object' && event !== null && typeof event.id === 'string' && typeof event.type === 'string';
}

/**
 * The envelope stored in a stream entry (`XRANGE`/`XREADGROUP` reply), or undefined for an entry this service did
 * not write (another field, or one that is not a JSON object): readers skip it rather than fail on it for good.
 */
export function envelopeFromEntry(id: string, fields: string[]): EventEnvelope | undefined {
  for (let i = 0; i + 1 < fields.length; i += 2) {
    if (fields[i] !== 'e') continue;
    try {
      const body = JSON.parse(fields[i + 1]!) as unknown;
      return typeof body === 'object' && body !== null && !Array.isArray(body) ? { id, ...(body as Omit<EventEnvelope, 'id'>) } : undefined;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

export function createEventBus(options: EventBusOptions): EventBus {
  const { redis, prefix, maxLen, log } = options;
  const streamKey = `${prefix}:events`;
  const channel = `${prefix}:events:live`;
  const emitScript = emitCommand(redis);
  const listeners = new Map<EventListener, readonly EventType[] | '*'>();
  let subscriber: RedisConnection | undefined;
  let subscribed: Promise<void> | undefined;
  /**
   * The newest event delivered to listeners; before the first, the stream's last entry when the subscription
   * began. A reconnected subscriber catches up from here.
   */
  let lastId: string | undefined;
  /** Live events received from a reconnect until the catch-up has read the stream: delivered after it. */
  let held: EventEnvelope[] | undefined;
  let catchingUp = false;
  let readAgain = false;

  function deliver(events: EventEnvelope[]): void {
    for (const event of events) {
      if (lastId !== undefined && !streamIdAfter(event.id, lastId)) continue;
      lastId = event.id;
      for (const [listener, types] of listeners) {
        if (!matches(types, event.type)) continue;
        try {
          listener(event);
        } catch (error) {
          log?.error({ err: error, type: event.type }, 'events: listener threw');
        }
      }
    }
  }

  function onMessage(message: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(message);
    } catch (error) {
      log?.warn({ err: error }, 'events: unreadable live message');
      return;
    }
    // Anything else on the channel (another program's PUBLISH) is left out: it must not throw out of the subscriber.
    const events = Array.isArray(parsed) ? parsed.filter(isEnvelope) : [];
    if (events.length === 0) return;
    if (held !== undefined) held.push(...events);
    else deliver(events);
  }

  function reconnected(connection: RedisConnection): void {
    held ??= [];
    readAgain = true;
    if (!catchingUp) void catchUp(connection);
  }

  /** Delivers what the stream holds after `lastId`, then the live events held meanwhile. */
  async function catchUp(connection: RedisConnection): Promise<void> {
    catchingUp = true;
    try {
      while (readAgain && subscriber === connection) {
        readAgain = false;
        try {
          // ioredis subscribes again by itself but reports `ready` before the server confirmed it: once this second
          // (harmless) SUBSCRIBE is answered, whatever is published next comes live, so the stream read after it
          // leaves no gap.
          await connection.subscribe(channel);
          await whenReady(redis);
          let page: EventEnvelope[];
          do {
            page = await readSince(lastId, '*', CATCH_UP_PAGE);
            deliver(page);
          } while (page.length === CATCH_UP_PAGE && subscriber === connection);
        } catch (error) {
          log?.warn({ err: error }, 'events: catching up after a reconnect failed');
          // Down again: the next `ready` starts over, from the same `lastId`.
          if (connection.status !== 'ready') return;
          readAgain = true;
          await new Promise((resolve) => setTimeout(resolve, CATCH_UP_RETRY_MS));
        }
      }
      if (subscriber !== connection) return;
      const live = held ?? [];
      held = undefined;
      deliver(live);
    } finally {
      catchingUp = false;
    }
  }

  let queued: Pending[] = [];
  let flushScheduled = false;

  async function flush(batch: Pending[]): Promise<void> {
    const keys = [streamKey];
    const args = [String(maxLen), channel];
    for (const item of batch) {
      let marker = 0;
      if (item.once !== undefined) {
        keys.push(item.once.key);
        marker = keys.length;
      }
      const alsoSet = Object.entries(item.once?.alsoSet ?? {});
      args.push(item.type, item.json, String(marker), item.once?.field ?? '', String(alsoSet.length), ...alsoSet.flat());
    }
    try {
      const reply = emitScript(keys.length, ...keys, ...args);
      for (const item of batch) item.onWritten?.();
      const answers = await reply;
      batch.forEach((item, i) => {
        const answer = answers[i] ?? '';
        if (answer.startsWith('!')) item.reject(new Error(`events: ${answer.slice(1)}`));
        else item.resolve(answer ? ({ id: answer, ...item.body } as EventEnvelope) : undefined);
      });
    } catch (error) {
      for (const item of batch) item.reject(error);
    }
  }

  function scheduleFlush(): void {
    if (flushScheduled) return;
    flushScheduled = true;
    setImmediate(() => {
      flushScheduled = false;
      const all = queued;
      queued = [];
      for (let i = 0; i < all.length; i += MAX_BATCH) void flush(all.slice(i, i + MAX_BATCH));
    });
  }

  async function readSince(id: string | undefined, types: readonly EventType[] | '*' = '*', count = 100): Promise<EventEnvelope[]> {
    const events: EventEnvelope[] = [];
    let start = id === undefined || id === '' ? '-' : `(${id}`;
    // Filtering happens here, so a page of the stream may hold fewer matches than asked for: read on until
    // `count` match or the stream ends.
    for (;;) {
      const entries = (await redis.xrange(streamKey, start, '+', 'COUNT', Math.max(count, 100))) as [string, string[]][];
      for (const [entryId, fields] of entries) {
        const event = envelopeFromEntry(entryId, fields);
        if (event !== undefined && matches(types, event.type)) events.push(event);
        if (events.length >= count) return events;
      }
      if (entries.length === 0) return events;
      start = `(${entries[entries.length - 1]![0]}`;
    }
  }

  async function ensureSubscribed(): Promise<void> {
    if (subscribed === undefined) {
      const connection: RedisConnection = (redis as Redis).duplicate();
      subscriber = connection;
      connection.on('error', (error: Error) => log?.warn({ err: error }, 'events: subscriber connection error'));
      connection.on('message', (from: string, message: string) => {
        if (from === channel) onMessage(message);
      });
      // A producer connection has no offline queue: SUBSCRIBE before `ready` would fail.
      subscribed = whenReady(connection, SUBSCRIBER_READY_TIMEOUT_MS).then(async () => {
        // Read before subscribing: every later event then comes live or, after a reconnect, from the stream.
        const [last] = (await redis.xrevrange(streamKey, '+', '-', 'COUNT', 1)) as [string, string[]][];
        lastId = last?.[0] ?? '0-0';
        await connection.subscribe(channel);
        connection.on('ready', () => reconnected(connection));
      });
      subscribed.catch(() => {
        if (subscriber !== connection) return;
        subscriber = undefined;
        subscribed = undefined;
        // Else it would go on reconnecting, subscribed to nothing.
        connection.disconnect();
      });
    }
    await subscribed;
  }

  return {
    streamKey,
    connection: redis,

    emit<T>(input: EventInput<T>, opts: EmitOptions = {}): Promise<EventEnvelope<T> | undefined> {
      const { type, store, key, jobId, data } = input;
      // Absent fields are left out, as JSON leaves them out: the envelope returned equals the one listeners get.
      const body = { type, at: input.at ?? nowIso() } as Omit<EventEnvelope, 'id'>;
      if (store !== undefined) body.store = store;
      if (key !== undefined) body.key = key;
      if (jobId !== undefined) body.jobId = jobId;
      body.data = data;
      const json = JSON.stringify(body);
      return new Promise((resolve, reject) => {
        queued.push({ type, body, json, once: opts.once, onWritten: opts.onWritten, resolve: resolve as Pending['resolve'], reject });
        scheduleFlush();
      });
    },

    async subscribe(types, listener) {
      // One type is a list of one: a string's `includes` would take a part of a type's name for it.
      listeners.set(listener, types === '*' || Array.isArray(types) ? types : [types as EventType]);
      try {
        await ensureSubscribed();
      } catch (error) {
        listeners.delete(listener);
        throw error;
      }
      return async () => {
        listeners.delete(listener);
      };
    },

    async read(id) {
      const [entry] = (await redis.xrange(streamKey, id, id)) as [string, string[]][];
      return entry === undefined ? undefined : envelopeFromEntry(entry[0], entry[1]);
    },

    readSince,

    async bounds() {
      const [reply, groups] = await Promise.all([redis.xinfo('STREAM', streamKey).catch(noStream), streamGroups(redis, streamKey)]);
      const info = reply as unknown[];
      const field = (name: string) => info[info.indexOf(name) + 1];
      const last = field('last-generated-id');
      const oldest = (field('first-entry') as [string, unknown] | null | undefined)?.[0];
      // `entries-added` (Redis 7 and later) counts every entry ever appended; fewer held means some were trimmed.
      const added = field('entries-added');
      const trimmed = typeof added === 'number' ? added > Number(field('length')) : oldest !== undefined;
      const wholeSince = groups.find((group) => group.name === WHOLE_SINCE)?.lastDeliveredId;
      return {
        ...(typeof last === 'string' ? { last } : {}),
        ...(oldest !== undefined ? { oldest } : {}),
        trimmed,
        ...(wholeSince !== undefined ? { wholeSince } : {}),
      };
    },

    async markWholeSince() {
      await redis.eval(MARK_SCRIPT, 1, streamKey, WHOLE_SINCE);
    },

    listenerCount() {
      return listeners.size;
    },

    async close() {
      listeners.clear();
      const connection = subscriber;
      subscriber = undefined;
      subscribed = undefined;
      held = undefined;
      if (connection !== undefined) {
        try {
          await connection.quit();
        } catch {
          connection.disconnect();
        }
      }
    },
  };
}

/** `markWholeSince` as a process starts: without the mark, resumes before the first event report a gap, as before. */
export async function markEventsWhole(bus: Pick<EventBus, 'markWholeSince'>, log: Logger): Promise<void> {
  await bus.markWholeSince().catch((error: unknown) => log.warn({ err: error }, 'events: could not mark the stream whole from now on'));
}
