/**
 * Where a server of this service listens (the API, a worker's /metrics): HOST, unless API_TOKENS is not set — then
 * nothing asks for a token, so it binds to loopback only whatever HOST says, and says so.
 */
import type { Config } from './config.js';
import type { Logger } from './log.js';

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

export function listenHost(config: Pick<Config, 'host' | 'apiTokens'>, log: Logger): string {
  if (config.apiTokens.length > 0) return config.host;
  if (!LOOPBACK.has(config.host)) log.warn({ host: config.host }, 'API_TOKENS is not set: binding to 127.0.0.1 only, not HOST');
  else log.warn('API_TOKENS is not set: the API is open, on loopback only');
  return LOOPBACK.has(config.host) ? config.host : '127.0.0.1';
}
