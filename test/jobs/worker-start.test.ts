/**
 * A worker start that a signal stops while Redis does not answer (`startWorkerProcess` with `signal`): it stops
 * waiting, closes what it made — webhook deliveries included — and leaves the stores it was given open, since
 * `npm start`'s web half still serves requests with them while it drains.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { freePort } from '../../src/embedded-redis.js';
import { DiskProvider } from '../../src/providers/disk.js';
import { RamProvider } from '../../src/providers/ram.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { startWorkerProcess } from '../../src/workers/process.js';
import { interceptMethod } from '../support/intercept.js';
import { pino } from 'pino';

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

describe('a worker start stopped by a signal while Redis does not answer', () => {
  // With webhooks it waits for their consumer groups; without, for the workers' own connections.
  it.each([
    ['webhooks and all', { WEBHOOK_URLS: 'http://127.0.0.1:9/hook', WEBHOOK_SECRET: 'a-webhook-secret-of-some-length' }],
    ['with no webhooks', {}],
  ])('rejects within seconds (%s), leaves the stores it was given open, and says no job was left behind', async (_, webhooks) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'kyozo-worker-start-'));
    dirs.push(dir);
    const config = loadConfig({
      REDIS_URL: `redis://127.0.0.1:${await freePort()}`,
      STORES: 'main:ram',
      STORAGE_ROOT_DIR: dir,
      ...webhooks,
    });
    const closed: string[] = [];
    const counted = <P extends StorageProvider>(name: string, provider: P) =>
      interceptMethod(provider, 'close', (close) => async () => {
        closed.push(name);
        await close();
      });
    const ram = new RamProvider({ maxBytes: 1024 * 1024 });
    const staging = new DiskProvider({ root: path.join(dir, 'staging'), fsync: false });
    const abort = new AbortController();
    const lines: string[] = [];
    const starting = startWorkerProcess({
      config,
      log: pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) }),
      stores: new Map([['main', counted('main', ram)]]),
      stagingProvider: counted('staging', staging),
      signal: abort.signal,
    });
    await new Promise((resolve) => setTimeout(resolve, 500)); // it is waiting for Redis by now
    const signalled = performance.now();
    abort.abort();
    await expect(starting).rejects.toMatchObject({ name: 'AbortError' });
    expect(performance.now() - signalled).toBeLessThan(5_000);
    expect(closed).toEqual([]);
    expect((await ram.write('still', 'served')).size).toBe(6);
    // It had taken no job: no job is said to be left for another worker.
    expect(lines.filter((line) => line.includes('did not finish in time'))).toEqual([]);
  });

  // Without webhooks the job workers reconnect; with them, the start waits on the delivery workers' first.
  it.each([
    ['worker error', {}, 2], // one per queue family, objects and maintenance
    ['webhooks: worker error', { WEBHOOK_URLS: 'http://127.0.0.1:9/hook', WEBHOOK_SECRET: 'a-webhook-secret-of-some-length' }, 1], // one URL
  ])('logs a refused connection (%s) once per queue, not on every reconnect while Redis does not answer', async (message, webhooks, most) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'kyozo-worker-start-'));
    dirs.push(dir);
    const config = loadConfig({ REDIS_URL: `redis://127.0.0.1:${await freePort()}`, STORES: 'main:ram', STORAGE_ROOT_DIR: dir, ...webhooks });
    const lines: string[] = [];
    const abort = new AbortController();
    const starting = startWorkerProcess({
      config,
      log: pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) }),
      stores: new Map([['main', new RamProvider({ maxBytes: 1024 })]]),
      stagingProvider: new DiskProvider({ root: path.join(dir, 'staging'), fsync: false }),
      signal: abort.signal,
    });
    await new Promise((resolve) => setTimeout(resolve, 2_500)); // several reconnects of each worker
    abort.abort();
    await expect(starting).rejects.toMatchObject({ name: 'AbortError' });
    const workerErrors = lines.map((line) => JSON.parse(line) as { msg: string }).filter((line) => line.msg === message);
    expect(workerErrors.length).toBeGreaterThan(0);
    expect(workerErrors.length).toBeLessThanOrEqual(most);
  });
});
