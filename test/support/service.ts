/**
 * The whole service in the test process, built the way `src/main.ts` builds it (real Redis under a unique prefix,
 * real stores under a temp root, a real worker), with the Hono app to call through `app.request()`.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import type { Hono } from 'hono';
import { createApp, type AppDeps } from '../../src/api/app.js';
import { ApiMetrics } from '../../src/metrics.js';
import { startWebServices } from '../../src/api/services.js';
import { loadConfig, type Config } from '../../src/config.js';
import { createStagingProvider } from '../../src/jobs/staging.js';
import { createStores } from '../../src/providers/index.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { startWorkerProcess, type WorkerProcess } from '../../src/workers/process.js';
import { closeRedis, createRedis } from '../../src/redis.js';
import { deleteKeys, TEST_REDIS_URL, uniquePrefix } from './redis.js';

export const quietLog = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

export interface TestService {
  app: Hono;
  deps: AppDeps;
  config: Config;
  root: string;
  stagingProvider: StorageProvider;
  worker?: WorkerProcess;
  close(): Promise<void>;
}

export interface TestServiceOptions {
  worker?: boolean;
  /** The staging provider as the web process or the worker sees it (one slowed or failing, say); both share it otherwise. */
  staging?: { web?: (provider: StorageProvider) => StorageProvider; worker?: (provider: StorageProvider) => StorageProvider };
}

export async function startTestService(label: string, env: Record<string, string> = {}, { worker = true, staging }: TestServiceOptions = {}): Promise<TestService> {
  const root = await mkdtemp(path.join(os.tmpdir(), `kyozo-${label}-`));
  const config = loadConfig({
    REDIS_URL: TEST_REDIS_URL,
    QUEUE_PREFIX: uniquePrefix(label),
    STORAGE_ROOT_DIR: root,
    STORES: 'files:disk,mem:ram',
    DISK_FSYNC: 'false',
    WAIT_TIMEOUT_MS: '15000',
    JOB_ATTEMPTS: '3',
    ...env,
  });
  const metrics = new ApiMetrics();
  const storeRedis = createRedis(config, 'worker');
  const stores = await createStores(config, { redis: storeRedis, log: quietLog, observe: (store, o) => metrics.observeProvider(store, o) });
  const stagingProvider = await createStagingProvider(config);
  const workerStaging = staging?.worker?.(stagingProvider) ?? stagingProvider;
  const workerProcess = worker ? await startWorkerProcess({ config, log: quietLog, stores, stagingProvider: workerStaging }) : undefined;
  const web = await startWebServices({ config, log: quietLog, stores, stagingProvider: staging?.web?.(stagingProvider) ?? stagingProvider, metrics });
  return {
    app: createApp(web.deps),
    deps: web.deps,
    config,
    root,
    stagingProvider,
    worker: workerProcess,
    async close() {
      await web.close();
      await workerProcess?.shutdown();
      const cleaner = createRedis(config, 'worker');
      await deleteKeys(cleaner, config.queuePrefix).catch(() => undefined);
      await Promise.all([closeRedis(cleaner), closeRedis(storeRedis)]);
      await rm(root, { recursive: true, force: true });
    },
  };
}
