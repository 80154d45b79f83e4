/**
 * The worker process (`npm run start:worker`, Procfile `worker:`): every job family with `WORKER_CONCURRENCY`,
 * webhook deliveries when `WEBHOOK_URLS` is set, and a graceful shutdown on SIGTERM, SIGINT or SIGHUP (during the
 * start too): no new jobs, the active ones finish within `WORKER_SHUTDOWN_TIMEOUT_MS` (after that their locks lapse
 * and another worker picks them up), connections closed, exit 0.
 */
import { loadConfigOrExit, SHUTDOWN_GRACE_MS, shutdownOnSignals } from '../lifecycle.js';
import { createLogger } from '../log.js';
import { startWorkerProcess, type WorkerProcess } from './process.js';

const config = loadConfigOrExit('kyozo worker');
const log = createLogger(config.logLevel).child({ component: 'worker' });

let worker: WorkerProcess | undefined;
// Before the start: a signal during it (a deploy) still closes the worker, which may hold jobs by then.
const stopAfterFailure = shutdownOnSignals(
  async () => {
    await starting;
    await worker?.shutdown();
  },
  { log, deadlineMs: config.workers.shutdownTimeoutMs + SHUTDOWN_GRACE_MS },
);
const starting = startWorkerProcess({ config, log }).then(
  (started) => {
    worker = started;
    log.info(
      { stores: config.stores.map((store) => `${store.name}:${store.kind}`), concurrency: config.workers.concurrency, webhooks: config.events.webhookUrls.length },
      'worker ready',
    );
  },
  (error: unknown) => {
    console.error(`kyozo worker: cannot start: ${error instanceof Error ? error.message : String(error)}`);
    stopAfterFailure(1);
  },
);
