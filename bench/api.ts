/**
 * API enqueue throughput (issue 6): PUT of a 1 KiB object answered 202, through the real app — bearer auth,
 * request id, metrics, path and key validation, body staging (inline: sha256 + base64), the job's zod schema,
 * pino request logs at info (to /dev/null) — served by @hono/node-server, beside a bare Hono handler that reads
 * the body and does `queue.add` with it (the same job size) on the same Redis, in the same process, in the same
 * run. Load: autocannon in its own process, 10 connections. No worker runs: this is the enqueue path alone, and
 * the keys of each run are removed before the next.
 * Target: ours ≥ 80 % of bare.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { serve, type ServerType } from '@hono/node-server';
import { Queue } from 'bullmq';
import { Hono } from 'hono';
import { pino } from 'pino';
import { createApp } from '../src/api/app.js';
import { listen } from '../src/api/server.js';
import { startWebServices } from '../src/api/services.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { defaultJobOptions } from '../src/jobs/queue.js';
import { closeRedis, createRedis, whenReady } from '../src/redis.js';
import { deleteKeys, TEST_REDIS_URL, uniquePrefix } from '../test/support/redis.js';
import { load, type LoadResult } from './load.js';
import { machineName, type BenchResult, type BenchRow } from './report.js';

const TOKEN = 'bench-api-token-0123';
const BODY = 'k'.repeat(1024);
const CONNECTIONS = 10;
const SECONDS = 4;
const ROUNDS = 7;
/**
 * Load before measuring, per side: the route's code takes V8 some ten seconds of full load to optimise (the first
 * seconds cost twice the CPU per request of the later ones), and a server is measured as it runs, warm.
 */
const WARMUP_ROUNDS = 3;
const WARMUP_SECONDS = 3;
const TARGET = 0.8;

interface Target {
  url: string;
  headers: Record<string, string>;
  /** Removes what the run enqueued. */
  reset(): Promise<void>;
}

function listenBare(app: Hono): Promise<{ url: string; server: ServerType }> {
  return new Promise((resolve) => {
    const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (address: AddressInfo) =>
      resolve({ url: `http://127.0.0.1:${address.port}`, server }),
    );
  });
}

interface Measured extends LoadResult {
  /** CPU this process (the server under load) spent per answered request: steadier than throughput here. */
  cpuMicrosPerRequest: number;
}

async function run(target: Target, seconds = SECONDS): Promise<Measured> {
  try {
    const cpuBefore = process.cpuUsage();
    const result = await load({
      url: target.url,
      method: 'PUT',
      body: BODY,
      headers: { 'content-type': 'application/octet-stream', ...target.headers },
      connections: CONNECTIONS,
      seconds,
    });
    const cpu = process.cpuUsage(cpuBefore);
    if (result.notOk > 0 || result.errors > 0) throw new Error(`${target.url}: ${result.notOk} non-2xx answers, ${result.errors} errors`);
    return { ...result, cpuMicrosPerRequest: (cpu.user + cpu.system) / Math.max(1, result.ok) };
  } finally {
    await target.reset();
  }
}

export async function runApiBench(): Promise<BenchResult> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'kyozo-bench-api-'));
  const config = loadConfig({
    REDIS_URL: TEST_REDIS_URL,
    QUEUE_PREFIX: uniquePrefix('bench-api'),
    STORAGE_ROOT_DIR: root,
    STORES: 'main:ram',
    API_TOKENS: TOKEN,
    LOG_LEVEL: 'info',
  });
  // The service's logger with its output thrown away: every request still builds and writes its line.
  const log = createLogger('info', pino.destination({ dest: '/dev/null', sync: true }));
  const services = await startWebServices({ config, log });
  const ours = await listen(createApp(services.deps), config, log);

  const bareRedis = createRedis({ redis: { url: TEST_REDIS_URL, explicit: true } }, 'producer');
  await whenReady(bareRedis);
  const barePrefix = uniquePrefix('bench-api-bare');
  const queue = new Queue('objects', { connection: bareRedis, prefix: barePrefix, defaultJobOptions: defaultJobOptions({ attempts: 5 }) });
  const bareApp = new Hono();
  bareApp.put('/bare/:key', async (c) => {
    const body = Buffer.from(await c.req.arrayBuffer());
    const job = await queue.add('write', { store: 'main', key: c.req.param('key'), body: { inline: body.toString('base64') } });
    return c.json({ jobId: job.id }, 202);
  });
  const bare = await listenBare(bareApp);

  const oursTarget: Target = {
    url: `${ours.url}/v1/stores/main/objects/bench/object-1`,
    headers: { authorization: `Bearer ${TOKEN}` },
    reset: async () => void (await deleteKeys(bareRedis, config.queuePrefix)),
  };
  const bareTarget: Target = { url: `${bare.url}/bare/object-1`, headers: {}, reset: async () => void (await deleteKeys(bareRedis, barePrefix)) };

  const pairs: { ours: Measured; bare: Measured; ratio: number }[] = [];
  try {
    for (let round = 0; round < WARMUP_ROUNDS; round++) {
      await run(bareTarget, WARMUP_SECONDS);
      await run(oursTarget, WARMUP_SECONDS);
    }
    for (let round = 0; round < ROUNDS; round++) {
      // Alternate who goes first, so a slow spell of the shared machine does not always hit the same side.
      const first = round % 2 === 0 ? await run(bareTarget) : undefined;
      const measured = await run(oursTarget);
      const baseline = first ?? (await run(bareTarget));
      pairs.push({ ours: measured, bare: baseline, ratio: measured.opsPerSec / baseline.opsPerSec });
    }
  } finally {
    await ours.close();
    await new Promise<void>((resolve) => bare.server.close(() => resolve()));
    await queue.close();
    await services.close();
    await deleteKeys(bareRedis, config.queuePrefix);
    await deleteKeys(bareRedis, barePrefix);
    await closeRedis(bareRedis);
    await rm(root, { recursive: true, force: true });
  }

  const median = [...pairs].sort((a, b) => a.ratio - b.ratio)[Math.floor(pairs.length / 2)]!;
  const row: BenchRow = {
    name: `PUT 1KiB -> 202, c=${CONNECTIONS}`,
    p50Ms: median.ours.p50Ms,
    p99Ms: median.ours.p99Ms,
    opsPerSec: median.ours.opsPerSec,
    baseline: 'bare Hono + queue.add',
    baselineP50Ms: median.bare.p50Ms,
    baselineOpsPerSec: median.bare.opsPerSec,
    ratio: median.ratio,
    target: `≥ ${TARGET.toFixed(2)} of bare`,
    pass: median.ratio >= TARGET,
  };
  return {
    suite: 'api',
    machine: machineName(),
    rows: [row],
    notes: [
      `median-ratio pair of ${ROUNDS} alternating ${SECONDS} s runs per side after ${WARMUP_ROUNDS} × ${WARMUP_SECONDS} s of warm-up load each (ratios: ${pairs.map((pair) => pair.ratio.toFixed(2)).join(', ')}); autocannon in its own process, ${CONNECTIONS} connections; ops/s = 2xx answers per second`,
      'ours: bearer auth, request id, metrics, key validation, inline staging (sha256 + base64), zod payload check, pino info line per request (to /dev/null); bare: read body, queue.add, 202',
      'no worker runs; both sides enqueue into the same Redis; latency in ms as autocannon reports it (p50/p99)',
      `server CPU per request (this process, user + system), per pair: ${pairs
        .map((pair) => `ours ${pair.ours.cpuMicrosPerRequest.toFixed(0)} µs / bare ${pair.bare.cpuMicrosPerRequest.toFixed(0)} µs`)
        .join('; ')}`,
    ],
  };
}
