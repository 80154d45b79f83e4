/**
 * Which stores the connected workers serve, for the web process to check its own STORES against: a job for a store
 * no worker has fails NOT_FOUND in the worker, after the API accepted it.
 *
 * A worker names its BullMQ workers after its set of stores (`rosterName`), so the name stands in Redis's CLIENT LIST
 * for as long as the worker is connected, and records once which stores the name stands for (`registerRoster`, one
 * hash field per distinct set). Nothing to expire: a worker gone takes its connections, and so its name, with it.
 */
import { hash } from 'node:crypto';
import type { RedisConnection } from '../redis.js';

const ROSTER = 'worker-stores';
const NAME_PREFIX = 'stores-';

export function rosterName(stores: Iterable<string>): string {
  return `${NAME_PREFIX}${hash('sha256', [...stores].sort().join('\n')).slice(0, 16)}`;
}

export async function registerRoster(redis: RedisConnection, prefix: string, stores: Iterable<string>): Promise<void> {
  const names = [...stores].sort();
  await redis.hset(`${prefix}:${ROSTER}`, rosterName(names), JSON.stringify(names));
}

/**
 * The stores the workers behind `workerNames` (BullMQ workers' names, from CLIENT LIST) serve together, or
 * `undefined` when one of them cannot be told (no name of this kind: a worker of an earlier version, another program).
 */
export async function storesServed(redis: RedisConnection, prefix: string, workerNames: readonly (string | undefined)[]): Promise<Set<string> | undefined> {
  const names = [...new Set(workerNames)];
  if (names.some((name) => name === undefined || !name.startsWith(NAME_PREFIX))) return undefined;
  if (names.length === 0) return new Set();
  const rosters = await redis.hmget(`${prefix}:${ROSTER}`, ...(names as string[]));
  if (rosters.some((roster) => roster === null)) return undefined;
  return new Set(rosters.flatMap((roster) => JSON.parse(roster!) as string[]));
}
