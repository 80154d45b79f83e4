/**
 * A job's event waits for the earlier turns on its key (`providers/key-turns.ts`). A staged write released its staged
 * body inside its handler, before its event, so a staging store slow to delete (an s3 staging bucket that hangs: 10 s
 * a try) held up every later mutation of the key in the process, even an inline write that touches no staging: it
 * waited past WAIT_TIMEOUT_MS (found in session 20's review of its own change). Now the release runs once the event
 * is out (`JobContext.afterEvent`). Here the staging delete waits until the test lets it go.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/api/app.js';
import { startWebServices, type WebServices } from '../../src/api/services.js';
import { loadConfig, type Config } from '../../src/config.js';
import { createStagingProvider } from '../../src/jobs/staging.js';
import { ApiMetrics } from '../../src/metrics.js';
import { createStores } from '../../src/providers/index.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { closeRedis, createRedis } from '../../src/redis.js';
import { startWorkerProcess, type WorkerProcess } from '../../src/workers/process.js';
import { beforeCalls } from '../support/intercept.js';
import { deleteKeys, TEST_REDIS_URL, uniquePrefix } from '../support/redis.js';
import { quietLog } from '../support/service.js';

let root: string;
let config: Config;
let web: WebServices;
let worker: WorkerProcess;
let stores: Map<string, StorageProvider>;
let staging: StorageProvider;
let app: ReturnType<typeof createApp>;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
let letDeletesGo!: () => void;
const deletesMayGo = new Promise<void>((resolve) => (letDeletesGo = resolve));
let deletesWaiting = 0;

beforeAll(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'kyozo-turn-release-'));
  config = loadConfig({
    REDIS_URL: TEST_REDIS_URL,
    QUEUE_PREFIX: uniquePrefix('turn-release'),
    STORAGE_ROOT_DIR: root,
    STORES: 'mem:ram',
    STAGING_INLINE_MAX: '1024',
    WAIT_TIMEOUT_MS: '5000',
  });
  stores = await createStores(config, { log: quietLog });
  staging = await createStagingProvider(config);
  const slowStaging = beforeCalls(staging, ['delete'], () => {
    deletesWaiting++;
    return deletesMayGo;
  });
  worker = await startWorkerProcess({ config, log: quietLog, stores, stagingProvider: slowStaging });
  web = await startWebServices({ config, log: quietLog, stores, stagingProvider: staging, metrics: new ApiMetrics() });
  app = createApp(web.deps);
}, 60_000);

afterAll(async () => {
  letDeletesGo();
  await web?.close();
  await worker?.shutdown();
  await staging?.close();
  for (const store of stores?.values() ?? []) await store.close();
  const cleaner = createRedis(config, 'worker');
  await deleteKeys(cleaner, config.queuePrefix).catch(() => undefined);
  await closeRedis(cleaner);
  await rm(root, { recursive: true, force: true });
});

describe('a staged write\'s release', () => {
  it('does not hold up the next write of the key: an inline write after it completes while the release waits', async () => {
    const big = Buffer.alloc(8192, 0x61);
    const a = await app.request('/v1/stores/mem/objects/hot', { method: 'PUT', body: big });
    expect(a.status).toBe(202);
    // A committed (the object is A's) — only its release is left.
    for (let i = 0; i < 200; i++) {
      const current = await app.request('/v1/stores/mem/objects/hot');
      if (current.status === 200 && (await current.arrayBuffer()).byteLength === big.length) break;
      await sleep(10);
    }
    const b = await app.request('/v1/stores/mem/objects/hot?wait=true', { method: 'PUT', body: 'B!' });
    // Answered with its result (not 202 after WAIT_TIMEOUT_MS) while the staged write's release still waits.
    expect({ status: b.status, releasesWaiting: deletesWaiting }).toEqual({ status: 200, releasesWaiting: 1 });
    letDeletesGo();
  }, 60_000);
});
