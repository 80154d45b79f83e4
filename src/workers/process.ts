/**
 * Everything a worker process runs, from a config: stores, staging, the events bus, the workers of every job
 * family and, when `WEBHOOK_URLS` is set, webhook deliveries; at start it registers the maintenance schedules
 * (`schedules.ts`). `main.ts` adds signals around it; tests start it in a child process with their own stores.
 */
import { queueReading, type ApiMetrics } from '../metrics.js';
import type { Config } from '../config.js';
import { createEventBus, markEventsWhole, type EventBus } from '../events/bus.js';
import { startWebhooks } from '../events/webhooks.js';
import { createQueues } from '../jobs/queue.js';
import { StagedOwners } from '../jobs/staged-owners.js';
import { createStaging, createStagingProvider } from '../jobs/staging.js';
import type { Logger } from '../log.js';
import { closeStores, createStores } from '../providers/index.js';
import type { Observation } from '../providers/metrics.js';
import type { StorageProvider } from '../providers/types.js';
import { unlessAborted } from '../lifecycle.js';
import { closeRedis, createRedis } from '../redis.js';
import { registerSchedules } from './schedules.js';
import { createWorkers, type FamilyOptions, type Workers, type WorkersOptions } from './worker.js';

/**
 * The maintenance family: two jobs at a time per worker process (a long migration does not hold up the 5-minute
 * tier pass), and a 2-minute lock, so an event loop held up by a big hash or a GC pause does not make a long job
 * look stalled and run twice; a killed worker's maintenance job is taken over after about that long.
 */
const MAINTENANCE_FAMILY: FamilyOptions = { concurrency: 2, lockDurationMs: 120_000 };

export interface WorkerProcessOptions {
  config: Config;
  log: Logger;
  /** Instead of the stores of `config.stores`. */
  stores?: Map<string, StorageProvider>;
  stagingProvider?: StorageProvider;
  /** Lock and stalled-check settings, for tests. */
  workerOptions?: Pick<WorkersOptions, 'lockDurationMs' | 'stalledIntervalMs' | 'maxStalledCount' | 'families'>;
  /** Register the maintenance schedules at start (default true). */
  schedules?: boolean;
  /** Observes this process's store operations and queue counts (the worker's own `/metrics`). */
  metrics?: ApiMetrics;
  /**
   * A signal during the start (Redis down, so waiting for it): the start stops waiting, closes what it built and
   * rejects with the signal's reason.
   */
  signal?: AbortSignal;
}

export interface WorkerProcess {
  workers: Workers;
  bus: EventBus;
  /** No new jobs; active ones get `WORKER_SHUTDOWN_TIMEOUT_MS`; then everything is closed. */
  shutdown(): Promise<void>;
}

export async function startWorkerProcess({
  config,
  log,
  stores: givenStores,
  stagingProvider: givenStaging,
  workerOptions,
  schedules = true,
  metrics,
  signal,
}: WorkerProcessOptions): Promise<WorkerProcess> {
  // BullMQ completes jobs on this connection (a duplicate serves its blocking fetch); the bus must share it, so that
  // a job's event runs on Redis before its completion (worker.ts, emitAhead). The webhook queue and stores use it too.
  const connection = createRedis(config, 'worker', { connectionName: 'kyozo:worker' });
  connection.on('error', (error: Error) => log.warn({ err: error }, 'redis connection error'));

  const observe = metrics && ((store: string, observation: Observation) => metrics.observeProvider(store, observation));
  const stores = givenStores ?? (await createStores(config, { redis: connection, log, observe }));
  const stagingProvider = givenStaging ?? (await createStagingProvider(config, log));
  const staging = createStaging({
    provider: stagingProvider,
    inlineMax: config.payloads.stagingInlineMax,
    owners: new StagedOwners(connection, config.queuePrefix),
  });
  const bus = createEventBus({ redis: connection, prefix: config.queuePrefix, maxLen: config.events.maxLen, log });
  // Schedules and cleanup's trimming of old jobs need the queues themselves.
  const queues = createQueues({ connection, prefix: config.queuePrefix, attempts: config.workers.attempts, retention: config.jobRetention });
  const { versionCount, versionDays } = config.retention;
  const { backupStore, backupKeep } = config.maintenance;
  const maintenance = {
    settings: {
      versionRetentionCount: versionCount,
      versionRetentionDays: versionDays,
      stagingTtlSeconds: config.payloads.stagingTtlSeconds,
      backupStore,
      backupKeep,
      eventsMaxLen: config.events.maxLen,
      completedJobAgeSeconds: config.jobRetention.completedAgeSeconds,
      failedJobAgeSeconds: config.jobRetention.failedAgeSeconds,
    },
    stagingProvider,
    queues: queues.all(),
    redis: connection,
    prefix: config.queuePrefix,
  };
  const { webhookUrls, webhookSecret } = config.events;
  if (webhookUrls.length > 0 && webhookSecret === undefined) log.warn('WEBHOOK_URLS is set without WEBHOOK_SECRET: deliveries are not signed');
  const webhooks =
    webhookUrls.length > 0
      ? startWebhooks({ connection, prefix: config.queuePrefix, streamKey: bus.streamKey, urls: webhookUrls, secret: webhookSecret, log })
      : undefined;
  // The delivery queues too: this process drains them, and its scrape is where their backlog shows first.
  metrics?.watchQueues(() => [...queues.all(), ...(webhooks?.queues.values() ?? [])].map(queueReading));
  let workers: Workers | undefined;
  let taking = false;
  /** `given`: also the stores and staging the caller passed in, which the caller may still be serving with. */
  const shutdown = async (timeoutMs = config.workers.shutdownTimeoutMs, given = true) => {
    const [closed] = await Promise.all([workers?.close(timeoutMs), webhooks?.close(timeoutMs)]);
    // With no time given (a start stopped before any job was taken), there was nothing to finish.
    if (closed?.timedOut && timeoutMs > 0) log.warn({ timeoutMs }, 'active jobs did not finish in time: another worker will pick them up');
    await bus.close();
    await queues.close();
    if (given || givenStores === undefined) await closeStores(stores);
    if (given || givenStaging === undefined) await stagingProvider.close();
    await closeRedis(connection);
  };
  try {
    // A URL's consumer group starts at the newest event when it is made: made before any job runs, it misses none of
    // this process's events on a first start.
    await unlessAborted(Promise.resolve(webhooks?.ready), signal);
    workers = createWorkers({
      connection,
      prefix: config.queuePrefix,
      stores,
      bus,
      staging,
      log,
      concurrency: config.workers.concurrency,
      maxStalledCount: config.workers.attempts,
      unavailableRetryMs: config.workers.unavailableRetrySeconds * 1000,
      maintenance,
      ...workerOptions,
      families: { ...workerOptions?.families, maintenance: { ...MAINTENANCE_FAMILY, ...workerOptions?.families?.maintenance } },
    });
    await unlessAborted(workers.waitUntilReady(), signal);
    // Once Redis answers (before, the script would wait for it, and the start with it).
    await unlessAborted(markEventsWhole(bus, log), signal);
    taking = true;
    if (schedules) {
      const registered = await unlessAborted(registerSchedules(queues, config, log), signal);
      log.info({ schedules: registered.map((schedule) => `${schedule.id} ${schedule.cron}`) }, 'maintenance schedules registered');
    }
  } catch (error) {
    // Before the workers were ready nothing can have been taken: no job to wait for (Redis may be down meanwhile).
    await shutdown(taking ? undefined : 0, false);
    throw error;
  }
  return { workers, bus, shutdown: () => shutdown() };
}
