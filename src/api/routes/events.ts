/**
 * `GET /v1/events`: Server-Sent Events. The live subscription starts before the history is replayed, so nothing
 * falls between the two: events after `Last-Event-ID` (or `?since=`) come from the stream, then the live ones
 * not already sent. A comment line every `HEARTBEAT_MS` keeps proxies from closing an idle connection, and finds a
 * client that stopped reading; when the client goes away its listener is removed (the bus keeps one Redis
 * subscription per process, not per client).
 */
import { Hono, type Context } from 'hono';
import { streamSSE } from 'hono/streaming';
import { EVENT_TYPES, streamIdAfter, type EventBus, type EventEnvelope, type EventType } from '../../events/bus.js';
import type { AppDeps } from '../app.js';
import { ApiError, requireRedisReady, toApiError } from '../errors.js';
import { refuseOtherMethods } from '../method-not-allowed.js';
import { outgoingOf, requestHeader } from '../node-request.js';
import { withTimeout } from '../../with-timeout.js';

const HEARTBEAT_MS = 15_000;
const REPLAY_PAGE = 500;
/**
 * Live events waiting for a client that does not read: past this many (`sseMaxWaitingEvents`) it is disconnected
 * (an EventSource comes back with its Last-Event-ID and is replayed what it missed), instead of the server holding
 * every event for it.
 */
const MAX_WAITING_EVENTS = 1_000;
/**
 * Streams open at once in one process (`sseMaxStreams`): each holds a socket, a file descriptor and a listener for
 * as long as its client likes, so without a cap clients use up the process's descriptors (then every request fails).
 */
const MAX_STREAMS = 1_000;
/**
 * How long one stream lasts (`sseMaxStreamMs`), give or take a tenth so that streams opened together do not end
 * together. Then it ends, and its client comes back with its Last-Event-ID, as after a shutdown: a client frozen with
 * its connection open (a laptop asleep) no longer holds one of `sseMaxStreams` for good, and streams spread over the
 * web processes started since.
 */
const MAX_STREAM_MS = 3_600_000;
/** Redis stream ids are two unsigned 64-bit numbers. */
const MAX_ID_PART = 2n ** 64n - 1n;

/** A stream id, `<ms>-<seq>`; `<ms>` alone (as Redis takes it) is `<ms>-0`. Undefined when it is none. */
function streamId(text: string): string | undefined {
  const parts = /^(\d+)(?:-(\d+))?$/.exec(text);
  if (parts === null) return undefined;
  const [ms, seq] = [BigInt(parts[1]!), BigInt(parts[2] ?? 0)];
  return ms > MAX_ID_PART || seq > MAX_ID_PART ? undefined : `${ms}-${seq}`; // canonical: `00` is `0-0`
}

/** `?types=a,b`; repeated (`?types=a&types=b`), its values count as if joined by commas: all of them, not the first. */
function parseTypes(values: readonly string[] | undefined): readonly EventType[] | '*' {
  const raw = values?.join(',');
  if (raw === undefined || raw === '' || raw === '*') return '*';
  const types = raw.split(',').map((type) => type.trim());
  const unknown = types.filter((type) => !(EVENT_TYPES as readonly string[]).includes(type));
  if (unknown.length > 0) throw new ApiError('BAD_REQUEST', `unknown event type(s) ${unknown.join(', ')}; known: ${EVENT_TYPES.join(', ')}`);
  return types as EventType[];
}

/**
 * The event id to resume after: `Last-Event-ID` (an EventSource reconnecting), else `?since=`. An empty one is none:
 * an EventSource that has seen no event with an id sends it empty.
 */
function resumePoint(c: Context): string | undefined {
  const header = requestHeader(c, 'last-event-id') || undefined;
  const since = header ?? (c.req.query('since') || undefined);
  if (since === undefined) return undefined;
  const id = streamId(since);
  if (id === undefined) throw new ApiError('BAD_REQUEST', `${header === undefined ? '?since' : 'Last-Event-ID'} must be an event id such as 1700000000000-0`);
  return id;
}

/** How long an EventSource told to come back later waits before it reconnects: 5 to 10 s, so that the clients of
 * an outage do not all come back in the same millisecond. */
const retryLaterMs = () => 5_000 + Math.floor(Math.random() * 5_000);

const wantsEventStream = (c: Context) => /\btext\/event-stream\b/i.test(requestHeader(c, 'accept') ?? '');

/**
 * An EventSource (the browsers' SSE client) gives up for good on any answer other than 200 (HTML, "Server-sent
 * events"): a 503 would end it. One that asks for an event stream when none can be served now gets 200 with a
 * `retry` delay and an empty stream, and comes back by itself with its Last-Event-ID; other clients get the 503.
 * Logged as the 503 would be: the 200 hides it from the request metrics.
 */
function comeBackLater(c: Context, deps: Pick<AppDeps, 'log'>, unavailable: ApiError): Response {
  deps.log.warn({ requestId: c.get('requestId'), err: unavailable.cause ?? unavailable }, 'events: no stream can be served now; the EventSource is told to retry');
  const reason = unavailable.message.replace(/[\r\n]+/g, ' ');
  return c.body(`: ${reason}\nretry: ${retryLaterMs()}\n\n`, 200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
}

export function eventRoutes(deps: AppDeps): Hono {
  const app = new Hono();
  const maxStreams = deps.sseMaxStreams ?? MAX_STREAMS;
  let open = 0;
  const serveStream = async (c: Context, types: readonly EventType[] | '*', since: string | undefined): Promise<Response> => {
    // A stream opened while Redis is down would only stay silent: 503, and the client comes back.
    requireRedisReady(deps.redis);
    // Hono runs this route for HEAD too and drops the body: a subscription made for it would never end.
    if (c.req.method === 'HEAD') return c.body(null, 200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });

    if (open >= maxStreams) {
      throw new ApiError('SERVICE_UNAVAILABLE', `this process already serves ${maxStreams} event streams; try again shortly`, { 'Retry-After': '5' });
    }
    open++;
    // Counted from here until the stream ends, or until a failure before it starts.
    let counted = true;
    const release = () => {
      if (counted) open--;
      counted = false;
    };
    try {
      return await eventStream(c, deps, types, since, release);
    } catch (error) {
      release();
      throw error;
    }
  };
  app.get('/', async (c) => {
    const types = parseTypes(c.req.queries('types'));
    const since = resumePoint(c);
    try {
      return await serveStream(c, types, since);
    } catch (error) {
      const apiError = toApiError(error);
      if (apiError.status === 503 && wantsEventStream(c)) return comeBackLater(c, deps, apiError);
      throw error;
    }
  });

  return refuseOtherMethods(app);
}

/**
 * Whether events after `position` may be gone from the stream, as its bounds say. Before the oldest entry, or with
 * no entry at all, they may — trimmed (EVENTS_MAXLEN), or the stream itself lost (a Redis restarted without
 * persistence, a failover to an empty replica), which leaves no trimming to see. From the very start (`0-0`) only
 * trimming takes events away, and from the point since which a stream never trimmed holds every event
 * (`wholeSince`, marked when it was made) nothing.
 */
function mayHaveLost(bounds: Awaited<ReturnType<EventBus['bounds']>>, position: string): boolean {
  const whole = !bounds.trimmed && bounds.wholeSince !== undefined && !streamIdAfter(bounds.wholeSince, position);
  return !whole && (bounds.trimmed || position !== '0-0') && (bounds.oldest === undefined || streamIdAfter(bounds.oldest, position));
}

/** One client's stream; `release` is called once it has ended. */
async function eventStream(c: Context, deps: AppDeps, types: readonly EventType[] | '*', since: string | undefined, release: () => void): Promise<Response> {
  const maxWaiting = deps.sseMaxWaitingEvents ?? MAX_WAITING_EVENTS;
  const pending: EventEnvelope[] = [];
  let deliver: ((event: EventEnvelope) => void) | undefined;
  /** Ends the stream, saying why in the log (set once the stream exists); the client resumes from Last-Event-ID. */
  let disconnect: ((why?: string) => void) | undefined;
  /**
   * A client of some types only: the newest live event of another type it has been through. Its next heartbeat
   * carries that id, so that its Last-Event-ID moves past what it does not ask for: else it resumes from its last
   * event of its types, which may be long gone from the stream (a gap reported for events it never wanted).
   */
  let passedBy: string | undefined;
  /** Its lifetime is up: nothing more is sent, and its Last-Event-ID must not move past what it did not get. */
  let ending = false;
  const unsubscribe = await deps.bus.subscribe('*', (event) => {
    if (ending) return;
    if (types !== '*' && !types.includes(event.type)) {
      // Only once live: during the replay, events of its types older than this one may still be unsent.
      if (deliver) passedBy = event.id;
      return;
    }
    if (deliver) return deliver(event);
    // Held back while the history is replayed, within the same limit as once live.
    if (pending.length < maxWaiting) pending.push(event);
    else if (disconnect) disconnect();
    else pending.push(event); // before the stream exists; it disconnects as soon as it starts
  });

  // Once streaming, a failure (Redis lost during a replay) can only end the stream: the client resumes from
  // Last-Event-ID.
  // Resumed from an id the stream is past, or that is ahead of it (not this stream's, or the largest there is).
  // Read before the stream exists: should it fail (Redis lost), the subscription made above is dropped again.
  const bounds = since === undefined ? { trimmed: false } : await deps.bus.bounds().catch(async (error: unknown) => {
    await unsubscribe();
    throw error;
  });
  const gap = since !== undefined && mayHaveLost(bounds, since);
  const ahead = since !== undefined && (bounds.last === undefined || streamIdAfter(since, bounds.last));
  // Ahead: nothing to replay, and every live event held since the subscription (made before `bounds`) is new to it.
  const resumeFrom = ahead ? undefined : since;
  return withoutFramingHeaders(streamSSE(c, async (stream) => {
    let lastSent = resumeFrom;
    let closed = false;
    const send = async (event: EventEnvelope) => {
      if (closed || (lastSent !== undefined && !streamIdAfter(event.id, lastSent))) return;
      lastSent = event.id;
      await stream.writeSSE({ id: event.id, event: event.type, data: JSON.stringify(event) });
    };
    // Writes wait for the client to read: live events and heartbeats queue up behind one another, in order.
    let chain = Promise.resolve();
    let waiting = 0;
    let written = 0;
    const done = () => {
      waiting--;
      written++;
    };
    const later = (write: () => Promise<unknown>) => {
      waiting++;
      chain = chain.then(write).then(done, done);
    };
    const finished = new Promise<void>((resolve) => {
      stream.onAbort(() => {
        closed = true;
        resolve();
      });
    });
    disconnect = (why = 'a client reads too slowly') => {
      if (closed) return;
      deps.log.warn({ waiting: waiting + pending.length, lastSent }, `events: ${why}; disconnected, it can resume from Last-Event-ID`);
      stream.abort();
      // Ending the response would wait for the client to read what is buffered, which it does not: the connection
      // itself goes, or it would stay open with no stream counted for it.
      outgoingOf(c)?.destroy();
    };
    let writtenAtLastBeat: number | undefined;
    const heartbeat = setInterval(() => {
      // The heartbeat queued a period ago (or a write ahead of it) still waits and nothing was written since: the
      // client takes nothing and its socket's buffers are full. The waiting-events limit needs more events to come:
      // when none did, such a client held its stream, and one of `sseMaxStreams`, for good.
      if (waiting > 0 && written === writtenAtLastBeat) return disconnect?.();
      writtenAtLastBeat = written;
      // Taken now: every event of its types before it is already queued, so written before this heartbeat.
      const passed = passedBy;
      passedBy = undefined;
      later(() => {
        if (passed === undefined || (lastSent !== undefined && !streamIdAfter(passed, lastSent))) return stream.write(': heartbeat\n\n');
        lastSent = passed;
        // An id and no data: an EventSource takes it as its Last-Event-ID and dispatches no event.
        return stream.write(`id: ${passed}\n: heartbeat\n\n`);
      });
    }, HEARTBEAT_MS);
    if (pending.length > maxWaiting) disconnect();
    const lifetime = deps.sseMaxStreamMs ?? MAX_STREAM_MS;
    let expire!: NodeJS.Timeout;
    const expired = new Promise<'expired'>((resolve) => (expire = setTimeout(resolve, lifetime * (0.9 + Math.random() * 0.2), 'expired')));
    try {
      if (gap) {
        // Events after the client's id were trimmed away (EVENTS_MAXLEN): it must know its view has a hole.
        const data = { since, oldest: bounds.oldest ?? null, reason: 'events after the resume point (Last-Event-ID or ?since) may be gone from the stream (trimmed past EVENTS_MAXLEN, or the stream was lost)' };
        await Promise.race([stream.writeSSE({ event: 'gap', data: JSON.stringify(data) }), finished]);
      }
      if (resumeFrom !== undefined) {
        for (let after = resumeFrom, page = await deps.bus.readSince(after, types, REPLAY_PAGE); page.length > 0 && !closed; ) {
          // Trimmed past the page's start while the client replays (a slow one, a flood of other types): the page
          // read from what was left, and the events between are gone unannounced. The client resumes from its last
          // event and is told the gap then. Not for the first page after a gap already told from the same point.
          if (!(gap && after === resumeFrom) && mayHaveLost(await deps.bus.bounds(), after)) {
            disconnect('events were trimmed from the stream past a replaying client');
            break;
          }
          // A write the client does not read never ends: the replay stops when the stream is ended instead.
          for (const event of page) if (!closed) await Promise.race([send(event), finished]);
          if (page.length < REPLAY_PAGE || closed || lastSent === undefined) break;
          after = lastSent;
          page = await deps.bus.readSince(after, types, REPLAY_PAGE);
        }
      }
      // The live events held back during the replay, then every new one, queued with no await in between: an
      // event arriving while the held-back ones are still being written must not land in `pending` after it
      // was drained.
      for (const event of pending.splice(0)) later(() => send(event));
      deliver = (event) => {
        if (closed) return;
        if (waiting < maxWaiting) return later(() => send(event));
        disconnect?.();
      };
      later(() => stream.write(': connected\n\n'));
      if ((await Promise.race([finished, expired])) === 'expired' && !closed) {
        // Its time is up: no more events for it, nor heartbeats (one could carry the id of an event of another type
        // passed after an event of its own was dropped); what is queued goes out, then the stream ends and the client
        // comes back for the rest. One that does not take what is queued within a heartbeat period loses the connection.
        ending = true;
        clearInterval(heartbeat);
        const drained = await withTimeout(chain, HEARTBEAT_MS, 'the client').then(() => true, () => false);
        if (!drained) outgoingOf(c)?.destroy();
      }
    } catch (error) {
      // Logged here, not handed to Hono, which would send its message to the client as an `error` event: the stream
      // just ends, and the client resumes from its Last-Event-ID.
      deps.log.warn({ err: error }, 'events: stream ended by an error');
    } finally {
      clearInterval(heartbeat);
      clearTimeout(expire);
      release();
      await unsubscribe();
    }
  }));
}

/**
 * Hono's `streamSSE` names the framing itself (`Transfer-Encoding: chunked`, `Connection: keep-alive`); Node frames
 * a response without a length as the client's HTTP version allows: chunked for HTTP/1.1, and for HTTP/1.0 (nginx's
 * default towards its upstreams) the body as it is, ended by closing the connection. Named by the app, the chunked
 * header went to HTTP/1.0 clients too, over a body that was not chunked.
 */
function withoutFramingHeaders(response: Response): Response {
  response.headers.delete('Transfer-Encoding');
  response.headers.delete('Connection');
  return response;
}
