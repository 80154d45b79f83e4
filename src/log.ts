/** The pino logger. Components take a child logger (`log.child({ component })`) so every line says who spoke. */
import { pino, type DestinationStream, type Logger } from 'pino';
import { nowIso } from './clock.js';

export type { Logger };

/** pino's `isoTime`, formatted once per millisecond instead of once per line. */
const isoTime = (): string => `,"time":"${nowIso()}"`;

/**
 * A file descriptor (stdout) that may go away under the process: a closed terminal (EIO, after a SIGHUP), a reader
 * that exited (EPIPE). pino stops quietly on EPIPE only; any other write error would be thrown as an uncaught
 * exception, ending the process in the middle of its graceful shutdown, and its flush on exit would retry the write
 * for ever. Here any write error stops the logging, and the process goes on: there is nowhere left to log to.
 */
export function logDestination(fd = 1): DestinationStream {
  const stream = pino.destination({ dest: fd });
  stream.on('error', () => {
    const nothing = () => true;
    Object.assign(stream, { write: nothing, flush: () => undefined, flushSync: () => undefined, end: () => undefined, destroy: () => undefined });
  });
  return stream;
}

/** What `withoutCommandArgs` copies field by field: plain objects and pino's serialized errors. */
const RECORD_PROTOTYPES = new Set<unknown>([Object.prototype, null, Object.getPrototypeOf(pino.stdSerializers.errWithCause(new Error()))]);

/**
 * ioredis puts the failed command on its errors, arguments included (`command.args`): an AUTH password, the URL-signing
 * secret, a value written. Logged as they are, a wrong password or a full Redis printed them; only the name is kept.
 * Copies what it changes: pino's serialized error shares nested objects with the caller's error.
 */
function withoutCommandArgs(value: unknown, depth = 0): unknown {
  if (typeof value !== 'object' || value === null || depth > 4) return value;
  if (Array.isArray(value)) return value.map((item: unknown) => withoutCommandArgs(item, depth + 1));
  // An error pino left as it is (in an array: EXECABORT's `previousErrors`) is serialized here, as pino would.
  if (value instanceof Error) return withoutCommandArgs(pino.stdSerializers.errWithCause(value), depth);
  // A Date or a Buffer is written as it is.
  if (!RECORD_PROTOTYPES.has(Object.getPrototypeOf(value))) return value;
  const fields: Record<string, unknown> = {};
  for (const [name, field] of Object.entries(value)) fields[name] = withoutCommandArgs(field, depth + 1);
  const command = (value as { command?: { name?: unknown } }).command;
  if (typeof command === 'object' && command !== null) fields.command = { name: command.name };
  return fields;
}

/**
 * An error with its cause as a field of its own (`cause`, serialized the same way), not pino's default, which appends
 * every cause's message to the error's: a job failure wraps its store error under the same words, which the default
 * printed twice.
 */
const serializeError = (error: Error): unknown => withoutCommandArgs(pino.stdSerializers.errWithCause(error));

/** Lines go to stdout, or to `destination` (the API benchmark throws them away after they are built and written). */
export function createLogger(level: string = process.env.LOG_LEVEL ?? 'info', destination: DestinationStream = logDestination()): Logger {
  // `failure`: a second error beside `err` (a run that lost its lock, and what it failed with).
  return pino({ level, base: { service: 'kyozo' }, timestamp: isoTime, serializers: { err: serializeError, failure: serializeError } }, destination);
}

/** How often one repeated worker error (the same queue, the same message) is logged again. */
export const REPEATED_ERROR_LOG_MS = 30_000;

/**
 * A line repeated on every reconnect (a worker's "connection refused" while Redis is down: a few a second per queue)
 * is logged once per `intervalMs` for the same `key`; the next line tells how many were left out (`repeated`). Keys
 * past their period are forgotten as new ones come (messages may name jobs: the keys would otherwise only grow).
 */
export function onceEvery(intervalMs: number, now: () => number = Date.now): (key: string, log: (repeated: number) => void) => void {
  const seen = new Map<string, { at: number; left: number }>();
  return (key, log) => {
    const at = now();
    const last = seen.get(key);
    if (last !== undefined && at - last.at < intervalMs) {
      last.left++;
      return;
    }
    if (last === undefined) for (const [old, entry] of seen) if (at - entry.at >= intervalMs) seen.delete(old);
    seen.set(key, { at, left: 0 });
    log(last?.left ?? 0);
  };
}
