/** The pino logger. Components take a child logger (`log.child({ component })`) so every line says who spoke. */
import { pino, type DestinationStream, type Logger } from 'pino';
import { nowIso } from './clock.js';

export type { Logger };

/** pino's `isoTime`, formatted once per millisecond instead of once per line. */
const isoTime = (): string => `,"time":"${nowIso()}"`;

/** Lines go to stdout, or to `destination` (the API benchmark throws them away after they are built and written). */
export function createLogger(level: string = process.env.LOG_LEVEL ?? 'info', destination?: DestinationStream): Logger {
  return pino({ level, base: { service: 'kyozo' }, timestamp: isoTime }, destination);
}
