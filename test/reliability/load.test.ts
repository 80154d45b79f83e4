/**
 * Promise 6: load is held. The web and worker processes (the Procfile's entries) take three rounds of autocannon
 * at 50 connections, PUT then GET: no 5xx and no errors, p99 reported, the queue drains after every round, and
 * the processes' resident memory after the third round is back near where it was after the first (no leak).
 *
 * The first round is the baseline, not the idle process: it warms the JIT, the heap and the connection pools,
 * which a process keeps. What must not happen is growth from round to round.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_REDIS_URL, uniquePrefix } from '../support/redis.js';
import {
  REPO_ROOT,
  reportFigures,
  rssBytes,
  scaled,
  sleep,
  startDeployment,
  type Deployment,
  type QueueProbe,
  type ServiceProcess,
} from './fixtures/processes.js';

const CONNECTIONS = 50;
const SECONDS = scaled(3, 30);
const ROUNDS = 3;
const KEYS = 500;
const MIB = 1024 * 1024;
/**
 * Allowed RSS growth from the end of round 1 to the end of round 3, per process. Measured (SOAK, 30 s runs): the
 * web process grows from round 1 to 2 as its heap settles at the load's working size, then stays level or shrinks;
 * a leak of the size that matters (a request's worth of memory kept per request) would add hundreds of MiB.
 */
const RSS_TOLERANCE = { ratio: 1.25, plusBytes: 64 * MIB };
const prefix = uniquePrefix('rel-load');

let deployment: Deployment | undefined;
let web: ServiceProcess;
let worker: ServiceProcess;
let probe: QueueProbe;
let base: string;

beforeAll(async () => {
  deployment = await startDeployment({
    label: 'load-root',
    redisUrl: TEST_REDIS_URL,
    prefix,
    // No fsync: on this 2-core machine the worker would otherwise need minutes to drain each round's writes.
    env: { STORES: 'files:disk', DISK_FSYNC: 'false' },
    worker: 'worker',
  });
  ({ web, worker, probe, base } = deployment);
}, 120_000);

afterAll(async () => {
  await deployment?.close();
});

interface Run {
  requests: { total: number; average: number };
  latency: { p50: number; p99: number; max: number };
  '2xx': number;
  '4xx': number;
  '5xx': number;
  non2xx: number;
  errors: number;
  timeouts: number;
}

async function autocannon(url: string, method: 'GET' | 'PUT', body = '', keys = 0): Promise<Run> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'test/reliability/fixtures/load.ts'), url, method, String(CONNECTIONS), String(SECONDS), body, String(keys)], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  if (code !== 0) throw new Error(`autocannon exited with ${code}: ${stderr.slice(-500)}`);
  return JSON.parse(stdout) as Run;
}

async function settledRss(): Promise<{ web: number; worker: number; webHeapUsed: number }> {
  await sleep(2_000); // let the last requests' garbage be collected
  const metrics = await (await fetch(`${base}/metrics`)).text();
  const webHeapUsed = Number(/^kyozo_nodejs_heap_size_used_bytes (\d+)/m.exec(metrics)?.[1] ?? NaN);
  return { web: await rssBytes(web.pid!), worker: await rssBytes(worker.pid!), webHeapUsed };
}

describe(`autocannon, ${CONNECTIONS} connections, ${ROUNDS} rounds of PUT then GET`, () => {
  it('no 5xx, the queue drains, memory after round 3 is back near round 1', async () => {
    const seed = await fetch(`${base}/v1/stores/files/objects/load/read-me?wait=true`, { method: 'PUT', body: 'r'.repeat(1024) });
    expect(seed.status).toBe(200);
    const before = { web: await rssBytes(web.pid!), worker: await rssBytes(worker.pid!) };
    const rounds: Record<string, unknown>[] = [];
    const rss: { web: number; worker: number; webHeapUsed: number }[] = [];

    for (let round = 1; round <= ROUNDS; round++) {
      const put = await autocannon(`${base}/v1/stores/files/objects/load/put`, 'PUT', 'w'.repeat(512), KEYS);
      const drainStarted = Date.now();
      const counts = await probe.drained({ timeoutMs: scaled(180_000, 900_000) });
      const drainMs = Date.now() - drainStarted;
      const get = await autocannon(`${base}/v1/stores/files/objects/load/read-me`, 'GET');
      for (const [what, run] of [
        ['PUT', put],
        ['GET', get],
      ] as const) {
        expect(run['5xx'], `${what} round ${round}: 5xx`).toBe(0);
        expect(run.non2xx, `${what} round ${round}: non-2xx`).toBe(0);
        expect(run.errors + run.timeouts, `${what} round ${round}: errors`).toBe(0);
        expect(run['2xx'], `${what} round ${round}: answers`).toBeGreaterThan(0);
      }
      expect(counts.failed).toBe(0);
      rss.push(await settledRss());
      rounds.push({
        round,
        put: { requests: put['2xx'], perSecond: Math.round(put.requests.average), p50Ms: put.latency.p50, p99Ms: put.latency.p99 },
        get: { requests: get['2xx'], perSecond: Math.round(get.requests.average), p50Ms: get.latency.p50, p99Ms: get.latency.p99 },
        drainMs,
      });
    }

    const mib = (bytes: number) => Math.round(bytes / MIB);
    reportFigures('6 load held', {
      connections: CONNECTIONS,
      secondsPerRun: SECONDS,
      rounds,
      fiveHundreds: 0,
      rssMiB: {
        beforeLoad: { web: mib(before.web), worker: mib(before.worker) },
        afterRounds: rss.map((r) => ({ web: mib(r.web), worker: mib(r.worker), webHeapUsed: mib(r.webHeapUsed) })),
      },
      tolerance: `round 3 <= round 1 x ${RSS_TOLERANCE.ratio} + ${mib(RSS_TOLERANCE.plusBytes)} MiB`,
    });
    for (const role of ['web', 'worker'] as const) {
      expect(rss[ROUNDS - 1]![role], `${role} RSS after round ${ROUNDS} vs round 1`).toBeLessThanOrEqual(rss[0]![role] * RSS_TOLERANCE.ratio + RSS_TOLERANCE.plusBytes);
    }
  }, scaled(300_000, 1_800_000));
});
