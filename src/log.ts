/** The pino logger. Components take a child logger (`log.child({ component })`) so every line says who spoke. */
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string = process.env.LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: { service: 'kyozo' }, timestamp: pino.stdTimeFunctions.isoTime });
}
