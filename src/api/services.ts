/**
 * Everything the web process runs, from a config: a producer Redis connection (fails fast: 503, not a hang),
 * the stores, staging, queues, the events bus, the job waiter, the URL signer and the metrics registry.
 * `api/main.ts` serves them alone; `src/main.ts` shares stores and staging with an in-process worker.
 */
import { Queue } from 'bullmq';
import type { Config } from '../config.js';
import { createEventBus, markEventsWhole } from '../events/bus.js';
import { webhookQueueName } from '../events/webhooks.js';
import { createQueues } from '../jobs/queue.js';
import { StagedOwners } from '../jobs/staged-owners.js';
import { createStaging, createStagingProvider } from '../jobs/staging.js';
import { unlessAborted } from '../lifecycle.js';
import type { Logger } from '../log.js';
import { closeStores, createStores } from '../providers/index.js';
import type { StorageProvider } from '../providers/types.js';
import { closeRedis, createRedis, takeConnectionErrors, whenReady } from '../redis.js';
import type { AppDeps } from './app.js';
import { JobWaiter } from './job-status.js';
import { ApiMetrics, queueReading } from '../metrics.js';
import { sharedSigner } from './shared-signer.js';

export interface WebServices {
  deps: AppDeps;
  close(): Promise<void>;
}

export async function startWebServices(options: {
  config: Config;
  log: Logger;
  stores?: Map<string, StorageProvider>;
  stagingProvider?: StorageProvider;
  /** Given with `stores` built outside, so their operations are observed by this registry. */
  metrics?: ApiMetrics;
  /** A signal during the start (Redis down, so waiting for it): the start stops waiting and rejects with its reason. */
  signal?: AbortSignal;
}): Promise<WebServices> {
  const { config, log } = options;
  const redis = createRedis(config, 'producer', { connectionName: 'kyozo:web' });
  redis.on('error', (error: Error) => log.warn({ err: error }, 'redis connection error'));
  await unlessAborted(whenReady(redis), options.signal).catch(async (error: unknown) => {
    await closeRedis(redis); // not handed to anyone yet: else it would go on reconnecting
    throw error;
  });

  const metrics = options.metrics ?? new ApiMetrics();
  const ownStores = options.stores === undefined;
  const stores =
    options.stores ?? (await createStores(config, { redis, log, observe: (store, observation) => metrics.observeProvider(store, observation) }));
  const stagingProvider = options.stagingProvider ?? (await createStagingProvider(config, log));
  const staging = createStaging({
    provider: stagingProvider,
    inlineMax: config.payloads.stagingInlineMax,
    owners: new StagedOwners(redis, config.queuePrefix),
  });
  const queues = createQueues({ connection: redis, prefix: config.queuePrefix, attempts: config.workers.attempts, retention: config.jobRetention });
  const bus = createEventBus({ redis, prefix: config.queuePrefix, maxLen: config.events.maxLen, log });
  metrics.watchQueues(() => [...queues.all(), ...webhookQueues].map(queueReading));
  metrics.watchCircuits(() =>
    [...stores].flatMap(([store, provider]) => {
      const state = (provider as { policy?: { state?: string } }).policy?.state;
      return state === undefined ? [] : [{ store, state }];
    }),
  );
  // Shown on the board beside the job queues; the worker process delivers from them.
  const webhookQueues = [...new Set(config.events.webhookUrls)].map((url) =>
    takeConnectionErrors(new Queue(webhookQueueName(url), { connection: redis, prefix: config.queuePrefix })),
  );
  const waiterConnection = () => {
    const connection = createRedis(config, 'worker', { connectionName: 'kyozo:web:wait' });
    connection.on('error', (error: Error) => log.warn({ err: error }, 'redis connection error (job waiter)'));
    return connection;
  };
  const waiter = new JobWaiter(queues, { connection: waiterConnection, prefix: config.queuePrefix, redis });
  const signing = await sharedSigner(config, redis, log);
  await markEventsWhole(bus, log);

  return {
    deps: { config, stores, queues, extraQueues: webhookQueues, staging, bus, redis, waiter, signer: signing.signer, metrics, log },
    async close() {
      signing.close();
      await waiter.close();
      await Promise.allSettled(webhookQueues.map((queue) => queue.close()));
      await bus.close();
      await queues.close();
      if (ownStores) {
        await closeStores(stores);
        await stagingProvider.close();
      }
      await closeRedis(redis);
    },
  };
}
