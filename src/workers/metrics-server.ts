/**
 * A worker process's own `/metrics` (Procfile `worker:`, on `WORKER_METRICS_PORT`): the store operations it runs —
 * writes, deletes, versions, restores, which the web process never sees — and the queue counts, for Prometheus to
 * scrape beside the web's. Bound as the API is: to `HOST` with `API_TOKENS` set, else to loopback only.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ApiMetrics } from '../metrics.js';
import { listenHost } from '../listen-host.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';

export interface MetricsServer {
  url: string;
  /** Stops listening; a scrape still in progress gets `CLOSE_GRACE_MS`, then its connection is cut. */
  close(): Promise<void>;
}

/** A scrape takes milliseconds: a connection still open after this is a stalled client, which must not hold up a shutdown. */
const CLOSE_GRACE_MS = 1000;

export async function serveMetrics(metrics: ApiMetrics, port: number, config: Pick<Config, 'host' | 'apiTokens'>, log: Logger): Promise<MetricsServer> {
  const server = createServer((request, response) => {
    if (request.method !== 'GET' || request.url?.split('?')[0] !== '/metrics') {
      response.writeHead(404, { 'Content-Type': 'text/plain' }).end('only GET /metrics here\n');
      return;
    }
    metrics.registry.metrics().then(
      (text) => response.writeHead(200, { 'Content-Type': metrics.registry.contentType }).end(text),
      (error: unknown) => {
        log.error({ err: error }, 'metrics: a scrape failed');
        response.writeHead(500, { 'Content-Type': 'text/plain' }).end('metrics unavailable\n');
      },
    );
  });
  const address = await new Promise<AddressInfo>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, listenHost(config, log), () => resolve(server.address() as AddressInfo));
  });
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}/metrics`,
    // Node's close() ends idle keep-alive connections itself, but waits for ever for a request in progress (half sent).
    close: () =>
      new Promise((resolve) => {
        const cut = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
        server.close(() => {
          clearTimeout(cut);
          resolve();
        });
      }),
  };
}
