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

/** Lines go to stdout, or to `destination` (the API benchmark throws them away after they are built and written). */
export function createLogger(level: string = process.env.LOG_LEVEL ?? 'info', destination: DestinationStream = logDestination()): Logger {
  return pino({ level, base: { service: 'kyozo' }, timestamp: isoTime }, destination);
}
