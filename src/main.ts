/**
 * `npm start`: the embedded service, web and worker in one process on the embedded defaults (a `default` disk
 * store under ./data). Both halves share the stores, so a ram store works here. Redis as DESIGN §2 says: `REDIS_URL`,
 * else 127.0.0.1:6379, else a private redis-server this process starts.
 */
import { createApp } from './api/app.js';
import { ApiMetrics } from './api/metrics.js';
import { DRAIN_MS, listen } from './api/server.js';
import { startWebServices } from './api/services.js';
import { redisAnswers, startPrivateRedis, type PrivateRedis } from './embedded-redis.js';
import { createStagingProvider } from './jobs/staging.js';
import { loadConfigOrExit, SHUTDOWN_GRACE_MS, shutdownOnSignals } from './lifecycle.js';
import { createLogger } from './log.js';
import { createStores } from './providers/index.js';
import { closeRedis, createRedis } from './redis.js';
import { startWorkerProcess } from './workers/process.js';

const config = loadConfigOrExit('kyozo');
const log = createLogger(config.logLevel);

let privateRedis: PrivateRedis | undefined;
try {
  if (!config.redis.explicit && config.redis.clusterNodes === undefined && !(await redisAnswers('127.0.0.1', 6379))) {
    privateRedis = await startPrivateRedis(config.storageRootDir, log);
    config.redis.url = privateRedis.url;
  }
  const metrics = new ApiMetrics();
  const storeRedis = createRedis(config, 'worker', { connectionName: 'kyozo:stores' });
  storeRedis.on('error', (error: Error) => log.warn({ err: error }, 'redis connection error'));
  const stores = await createStores(config, { redis: storeRedis, log, observe: (store, observation) => metrics.observeProvider(store, observation) });
  const stagingProvider = await createStagingProvider(config);
  const worker = await startWorkerProcess({ config, log: log.child({ component: 'worker' }), stores, stagingProvider });
  const web = await startWebServices({ config, log: log.child({ component: 'web' }), stores, stagingProvider, metrics });
  const server = await listen(createApp(web.deps), config, log);
  log.info({ url: server.url, board: `${server.url}/admin/queues`, stores: config.stores.map((s) => `${s.name}:${s.kind}`), data: config.storageRootDir }, 'kyozo ready');
  shutdownOnSignals(
    async () => {
      await server.close();
      await web.close();
      await worker.shutdown(); // closes the shared stores and staging
      await closeRedis(storeRedis);
      await privateRedis?.stop();
    },
    { log, deadlineMs: DRAIN_MS + config.workers.shutdownTimeoutMs + SHUTDOWN_GRACE_MS },
  );
} catch (error) {
  console.error(`kyozo: cannot start: ${error instanceof Error ? error.message : String(error)}`);
  await privateRedis?.stop();
  process.exit(1);
}
