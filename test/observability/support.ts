/** Helpers of the observability tests: a web+worker service whose pino lines are captured, served over real HTTP. */
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import type { Hono } from 'hono';
import { createApp, type AppDeps } from '../../src/api/app.js';
import { ApiMetrics } from '../../src/metrics.js';
import { listen, type HttpServer } from '../../src/api/server.js';
import { startWebServices } from '../../src/api/services.js';
import { loadConfig, type Config } from '../../src/config.js';
import { createStagingProvider } from '../../src/jobs/staging.js';
import { createLogger, type Logger } from '../../src/log.js';
import { createStores } from '../../src/providers/index.js';
import { closeRedis, createRedis } from '../../src/redis.js';
import { startWorkerProcess, type WorkerProcess } from '../../src/workers/process.js';
import { deleteKeys, TEST_REDIS_URL, uniquePrefix } from '../support/redis.js';

export class LogCapture {
  readonly lines: string[] = [];
  readonly log: Logger;
  constructor(level = 'trace') {
    const lines = this.lines;
    const stream = new Writable({
      write(chunk, _enc, cb) {
        for (const line of String(chunk).split('\n')) if (line) lines.push(line);
        cb();
      },
    });
    this.log = createLogger(level, stream as never);
  }
  get text(): string {
    return this.lines.join('\n');
  }
  parsed(): Record<string, unknown>[] {
    return this.lines.map((line) => JSON.parse(line) as Record<string, unknown>);
  }
}

export interface ObsService {
  app: Hono;
  deps: AppDeps;
  config: Config;
  metrics: ApiMetrics;
  capture: LogCapture;
  server?: HttpServer;
  worker?: WorkerProcess;
  close(): Promise<void>;
}

export async function startObsService(
  label: string,
  env: Record<string, string> = {},
  options: { worker?: boolean; http?: boolean; redisUrl?: string; processEnv?: Record<string, string> } = {},
): Promise<ObsService> {
  const root = await mkdtemp(path.join(os.tmpdir(), `kyozo-obs-${label}-`));
  const capture = new LogCapture();
  const config = loadConfig({
    REDIS_URL: options.redisUrl ?? TEST_REDIS_URL,
    QUEUE_PREFIX: uniquePrefix(label),
    STORAGE_ROOT_DIR: root,
    STORES: 'files:disk,mem:ram',
    DISK_FSYNC: 'false',
    WAIT_TIMEOUT_MS: '15000',
    JOB_ATTEMPTS: '1',
    HOST: '127.0.0.1',
    PORT: '0',
    ...options.processEnv,
    ...env,
  });
  const metrics = new ApiMetrics();
  const storeRedis = createRedis(config, 'worker');
  const stores = await createStores(config, { redis: storeRedis, log: capture.log, observe: (store, o) => metrics.observeProvider(store, o) });
  const stagingProvider = await createStagingProvider(config);
  const worker = options.worker === false ? undefined : await startWorkerProcess({ config, log: capture.log.child({ component: 'worker' }), stores, stagingProvider, schedules: false });
  const web = await startWebServices({ config, log: capture.log.child({ component: 'web' }), stores, stagingProvider, metrics });
  const app = createApp(web.deps);
  const server = options.http === false ? undefined : await listen(app, config, capture.log, metrics);
  return {
    app,
    deps: web.deps,
    config,
    metrics,
    capture,
    server,
    worker,
    async close() {
      await server?.close(1000);
      await web.close();
      await worker?.shutdown();
      const cleaner = createRedis({ ...config, redis: { ...config.redis, url: TEST_REDIS_URL } } as Config, 'worker');
      await deleteKeys(cleaner, config.queuePrefix).catch(() => undefined);
      await Promise.all([closeRedis(cleaner), closeRedis(storeRedis)]);
      await rm(root, { recursive: true, force: true });
    },
  };
}

/** A TCP proxy to `target` that can be switched to a black hole: accepts, reads, never answers or forwards. */
export async function blackHoleProxy(targetPort: number, targetHost = '127.0.0.1') {
  let hang = false;
  let down = false;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => undefined);
    if (hang) {
      client.resume();
      return;
    }
    const upstream = net.connect(targetPort, targetHost);
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
    client.on('data', (data) => {
      if (!hang) upstream.write(data);
    });
    upstream.on('data', (data) => {
      if (!hang) client.write(data);
    });
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    setHang(value: boolean) {
      hang = value;
    },
    /** Cuts every connection and resets new ones (Redis gone). */
    setDown(value: boolean) {
      down = value;
      if (value) for (const socket of sockets) socket.destroy();
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** A TCP server that accepts and never answers. */
export async function silentServer() {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.resume();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

export function seriesOf(text: string): string[] {
  return text.split('\n').filter((line) => line !== '' && !line.startsWith('#'));
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
