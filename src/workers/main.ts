/**
 * The worker process (`npm run start:worker`, Procfile `worker:`): every job family with `WORKER_CONCURRENCY`,
 * webhook deliveries when `WEBHOOK_URLS` is set, and a graceful shutdown on SIGTERM, SIGINT or SIGHUP (during the
 * start too): no new jobs, the active ones finish within `WORKER_SHUTDOWN_TIMEOUT_MS` (after that their locks lapse
 * and another worker picks them up), connections closed, exit 0. With `WORKER_METRICS_PORT`, its own `/metrics`
 * (`metrics-server.ts`).
 */
import { loadConfigOrExit, runService, SHUTDOWN_GRACE_MS } from '../lifecycle.js';
import { createLogger } from '../log.js';
import { ApiMetrics } from '../metrics.js';
import { serveMetrics, type MetricsServer } from './metrics-server.js';
import { startWorkerProcess, type WorkerProcess } from './process.js';

const config = loadConfigOrExit('kyozo worker');
const log = createLogger(config.logLevel).child({ component: 'worker' });

let worker: WorkerProcess | undefined;
let metricsServer: MetricsServer | undefined;
runService({
  name: 'kyozo worker',
  log,
  deadlineMs: config.workers.shutdownTimeoutMs + SHUTDOWN_GRACE_MS,
  async start(aborted) {
    const metrics = new ApiMetrics();
    // The port before the worker, as `npm start` binds its own: a start that cannot listen takes no job.
    const { metricsPort } = config.workers;
    if (metricsPort !== undefined) metricsServer = await serveMetrics(metrics, metricsPort, config, log);
    worker = await startWorkerProcess({ config, log, metrics, signal: aborted });
    log.info(
      {
        stores: config.stores.map((store) => `${store.name}:${store.kind}`),
        concurrency: config.workers.concurrency,
        webhooks: config.events.webhookUrls.length,
        ...(metricsServer ? { metrics: metricsServer.url } : {}),
      },
      'worker ready',
    );
  },
  // A signal during the start (a deploy) still closes the worker, which may hold jobs by then. The workers first: a
  // stalled scrape must not keep them taking jobs, and scrapes still see the active jobs finish.
  async stop() {
    await worker?.shutdown();
    await metricsServer?.close();
  },
});
