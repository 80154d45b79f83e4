/**
 * Everything a worker process runs, from a config: stores, staging, the events bus, the workers of every job
 * family and, when `WEBHOOK_URLS` is set, webhook deliveries. `main.ts` adds signals around it; tests start it in
 * a child process with their own stores.
 */
import type { Config } from '../config.js';
import { createEventBus, type EventBus } from '../events/bus.js';
import { startWebhooks } from '../events/webhooks.js';
import { createStaging, createStagingProvider } from '../jobs/staging.js';
import type { Logger } from '../log.js';
import { closeStores, createStores } from '../providers/index.js';
import type { StorageProvider } from '../providers/types.js';
import { closeRedis, createRedis } from '../redis.js';
import { createWorkers, type Workers, type WorkersOptions } from './worker.js';

export interface WorkerProcessOptions {
  config: Config;
  log: Logger;
  /** Instead of the stores of `config.stores`. */
  stores?: Map<string, StorageProvider>;
  stagingProvider?: StorageProvider;
  /** Lock and stalled-check settings, for tests. */
  workerOptions?: Pick<WorkersOptions, 'lockDurationMs' | 'stalledIntervalMs' | 'maxStalledCount'>;
}

export interface WorkerProcess {
  workers: Workers;
  bus: EventBus;
  /** No new jobs; active ones get `WORKER_SHUTDOWN_TIMEOUT_MS`; then everything is closed. */
  shutdown(): Promise<void>;
}

export async function startWorkerProcess({ config, log, stores: givenStores, stagingProvider: givenStaging, workerOptions }: WorkerProcessOptions): Promise<WorkerProcess> {
  // BullMQ duplicates this connection for each worker; the bus, the webhook queue and the stores use it as it is.
  const connection = createRedis(config, 'worker', { connectionName: 'kyozo:worker' });
  connection.on('error', (error: Error) => log.warn({ err: error }, 'redis connection error'));

  const stores = givenStores ?? (await createStores(config, { redis: connection, log }));
  const stagingProvider = givenStaging ?? (await createStagingProvider(config));
  const staging = createStaging({ provider: stagingProvider, inlineMax: config.payloads.stagingInlineMax });
  const bus = createEventBus({ redis: connection, prefix: config.queuePrefix, maxLen: config.events.maxLen, log });
  const workers = createWorkers({
    connection,
    prefix: config.queuePrefix,
    stores,
    bus,
    staging,
    log,
    concurrency: config.workers.concurrency,
    ...workerOptions,
  });
  const { webhookUrls, webhookSecret } = config.events;
  if (webhookUrls.length > 0 && webhookSecret === undefined) log.warn('WEBHOOK_URLS is set without WEBHOOK_SECRET: deliveries are not signed');
  const webhooks =
    webhookUrls.length > 0
      ? startWebhooks({ connection, prefix: config.queuePrefix, streamKey: bus.streamKey, urls: webhookUrls, secret: webhookSecret, log })
      : undefined;
  await workers.waitUntilReady();

  return {
    workers,
    bus,
    async shutdown() {
      const timeoutMs = config.workers.shutdownTimeoutMs;
      const [{ timedOut }] = await Promise.all([workers.close(timeoutMs), webhooks?.close()]);
      if (timedOut) log.warn({ timeoutMs }, 'active jobs did not finish in time: another worker will pick them up');
      await bus.close();
      await closeStores(stores);
      await stagingProvider.close();
      await closeRedis(connection);
    },
  };
}
