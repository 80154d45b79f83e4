/**
 * `npm start`: the embedded service, web and worker in one process on the embedded defaults (a `default` disk
 * store under ./data). Both halves share the stores, so a ram store works here. Redis as DESIGN §2 says: `REDIS_URL`,
 * else 127.0.0.1:6379, else a private redis-server this process starts.
 */
import { createApp } from './api/app.js';
import { ApiMetrics } from './metrics.js';
import { DRAIN_MS, listen, type HttpServer } from './api/server.js';
import { startWebServices, type WebServices } from './api/services.js';
import { startPrivateRedis, useLocalRedis, type PrivateRedis } from './embedded-redis.js';
import { createStagingProvider } from './jobs/staging.js';
import { loadConfigOrExit, runService, SHUTDOWN_GRACE_MS, unlessAborted } from './lifecycle.js';
import { createLogger } from './log.js';
import { closeStores, createStores } from './providers/index.js';
import type { StorageProvider } from './providers/types.js';
import { closeRedis, createRedis, whenReady, type RedisConnection } from './redis.js';
import { startWorkerProcess, type WorkerProcess } from './workers/process.js';

const config = loadConfigOrExit('kyozo');
const log = createLogger(config.logLevel);

/** What has been started so far: a signal or a failure during the start stops just these. */
interface Running {
  privateRedis?: PrivateRedis;
  storeRedis?: RedisConnection;
  /** Shared by web and worker; the worker's shutdown closes them once it has started. */
  stores?: Map<string, StorageProvider>;
  staging?: StorageProvider;
  web?: WebServices;
  server?: HttpServer;
  worker?: WorkerProcess;
}

/** Requests first (they may wait for jobs), then the jobs, then Redis: the private redis-server last of all. */
async function stop(running: Running): Promise<void> {
  await running.server?.close();
  await running.web?.close();
  if (running.worker !== undefined) await running.worker.shutdown(); // closes the shared stores and staging
  else {
    if (running.stores !== undefined) await closeStores(running.stores);
    await running.staging?.close();
  }
  if (running.storeRedis !== undefined) await closeRedis(running.storeRedis);
  await running.privateRedis?.stop();
}

/** Each step checks `aborted`: after a signal the start goes no further, and the shutdown stops what it started. */
async function start(running: Running, aborted: AbortSignal): Promise<void> {
  if (!config.redis.explicit && config.redis.clusterNodes === undefined && !(await useLocalRedis('127.0.0.1', 6379, log, aborted))) {
    running.privateRedis = await startPrivateRedis(config.storageRootDir, log);
    config.redis.url = running.privateRedis.url;
    aborted.throwIfAborted();
  }
  const metrics = new ApiMetrics();
  // Fails fast, as the web process's: the stores answer HTTP reads here too, and a hybrid read that must ask Redis
  // (cold down) is then 503 at once instead of waiting for Redis. A job's store call that fails so is retried.
  const storeRedis = (running.storeRedis = createRedis(config, 'producer', { connectionName: 'kyozo:stores' }));
  storeRedis.on('error', (error: Error) => log.warn({ err: error }, 'redis connection error'));
  await unlessAborted(whenReady(storeRedis), aborted); // it queues nothing while connecting: the stores open on it
  const stores = (running.stores = await createStores(config, { redis: storeRedis, log, observe: (store, observation) => metrics.observeProvider(store, observation) }));
  const stagingProvider = (running.staging = await createStagingProvider(config, log));
  running.web = await startWebServices({ config, log: log.child({ component: 'web' }), stores, stagingProvider, metrics });
  aborted.throwIfAborted();
  // The port before the worker: a start that cannot listen (a second copy on the same port) takes no job.
  running.server = await listen(createApp(running.web.deps), config, log, running.web.deps.metrics);
  aborted.throwIfAborted();
  running.worker = await startWorkerProcess({ config, log: log.child({ component: 'worker' }), stores, stagingProvider, signal: aborted });
  const { url } = running.server;
  log.info({ url, board: `${url}/admin/queues`, stores: config.stores.map((s) => `${s.name}:${s.kind}`), data: config.storageRootDir }, 'kyozo ready');
}

const running: Running = {};
runService({
  name: 'kyozo',
  log,
  deadlineMs: DRAIN_MS + config.workers.shutdownTimeoutMs + SHUTDOWN_GRACE_MS,
  start: (aborted) => start(running, aborted),
  stop: () => stop(running),
});
