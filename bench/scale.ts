/**
 * Scale-out on one Redis (issue 8): write jobs done per second by 1, 2 and 4 worker processes (the real
 * `startWorkerProcess`, `WORKER_CONCURRENCY` default 8) for a ram and a disk store, and Redis memory per waiting
 * job for a 1 KiB and a 5 MiB write.
 *
 * Throughput: N 1 KiB writes are enqueued through the service's `enqueue` into a paused queue while the worker
 * processes start; the clock runs from `resume` to the N-th `object.written` event received by a bus subscriber.
 * So the figure is what the workers and Redis sustain together, not how fast one producer can enqueue (the api
 * and pipeline suites measure that). A ram store lives in one process: with several workers each has its own ram
 * store, and what counts is completed jobs. The disk workers share one store directory, fsync on.
 * Beside it, in the same run: `redis-benchmark` (SET of 1 KiB, 50 clients) on the same Redis, and what Redis
 * itself spent per job (its CPU seconds and commands between resume and the last event), which bounds the jobs/s
 * one Redis core can carry whatever the number of workers.
 *
 * The suite starts its own `redis-server` from PATH (no persistence), so memory and CPU figures are its own and
 * not those of whatever else shares the default Redis; without one it uses REDIS_URL and says so.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import { createEventBus } from '../src/events/bus.js';
import { createQueues } from '../src/jobs/queue.js';
import { createStaging } from '../src/jobs/staging.js';
import { sha256Hex } from '../src/providers/body.js';
import { DiskProvider } from '../src/providers/disk.js';
import { closeRedis, createRedis, whenReady, type RedisConnection } from '../src/redis.js';
import { redisServerUnavailableReason, startRedisServer, type RedisServer } from '../test/cluster/redis-server.js';
import { deleteKeys, TEST_REDIS_URL, uniquePrefix } from '../test/support/redis.js';
import { startService, type ServiceProcess } from './processes.js';
import { machineName, type BenchResult, type BenchRow } from './report.js';

const run = promisify(execFile);
const percent = (share: number) => `${(share * 100).toFixed(0)} %`;
const log = pino({ level: 'silent' });
const BODY = Buffer.alloc(1024, 's');
const INLINE = { inline: BODY.toString('base64'), size: BODY.length, etag: sha256Hex(BODY) };
const KEY_SPACE = 1000;
const PRODUCER_WINDOW = 200;
const WORKER_COUNTS = [1, 2, 4] as const;
const JOBS: Record<StoreKind, number> = { ram: 6000, disk: 2000 };
const PASSES = 2;

type StoreKind = 'ram' | 'disk';

interface RedisStats {
  cpuSeconds: number;
  commands: number;
}

async function redisStats(redis: RedisConnection): Promise<RedisStats> {
  const info = await (redis as Redis).info('all');
  const field = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? Number.NaN);
  let commands = 0;
  for (const match of info.matchAll(/^cmdstat_[^:]+:calls=(\d+)/gm)) commands += Number(match[1]);
  return { cpuSeconds: field('used_cpu_user') + field('used_cpu_sys'), commands };
}

/** Busy and total jiffies of all CPUs (Linux /proc/stat), or undefined elsewhere. */
async function machineCpu(): Promise<{ busy: number; total: number } | undefined> {
  try {
    const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0]!;
    const [user, nice, system, idle, iowait, irq, softirq, steal] = line.split(/\s+/).slice(1, 9).map(Number) as number[];
    const busy = user! + nice! + system! + irq! + softirq! + steal!;
    return { busy, total: busy + idle! + iowait! };
  } catch {
    return undefined;
  }
}

async function connect(url: string, role: 'producer' | 'worker'): Promise<RedisConnection> {
  const connection = createRedis({ redis: { url, explicit: true } }, role);
  await whenReady(connection);
  return connection;
}

interface Throughput {
  opsPerSec: number;
  /** Redis CPU seconds per second of the run: 1.0 = one core busy. */
  redisBusy: number;
  redisCpuPerJobUs: number;
  commandsPerJob: number;
  /** CPU time per job of the worker processes, and of this process (enqueue is before the clock; events). */
  workerCpuPerJobUs: number;
  benchCpuPerJobUs: number;
  /** Share of all cores busy during the run (every process on the machine), when known. */
  machineBusy?: number;
}

async function enqueueAll(count: number, enqueue: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(PRODUCER_WINDOW, count) }, async () => {
      while (next < count) await enqueue(next++);
    }),
  );
}

async function measureWorkers(redisUrl: string, kind: StoreKind, workerCount: number, jobs: number): Promise<Throughput> {
  const prefix = uniquePrefix(`bench-scale-${kind}-${workerCount}`);
  const root = await mkdtemp(path.join(os.tmpdir(), 'kyozo-bench-scale-'));
  const [producer, subscriberConnection] = await Promise.all([connect(redisUrl, 'producer'), connect(redisUrl, 'worker')]);
  const queues = createQueues({ connection: producer, prefix, attempts: 5 });
  const bus = createEventBus({ redis: subscriberConnection, prefix, maxLen: 100_000, log });
  const env = { REDIS_URL: redisUrl, QUEUE_PREFIX: prefix, STORES: `main:${kind}`, STORAGE_ROOT_DIR: root };
  const workers: ServiceProcess[] = [];
  try {
    const queue = queues.queue('objects');
    await queue.pause();
    let done = 0;
    let allDone!: () => void;
    const finished = new Promise<void>((resolve) => (allDone = resolve));
    const unsubscribe = await bus.subscribe(['object.written'], () => {
      if (++done === jobs) allDone();
    });
    const [started] = await Promise.all([
      Promise.all(Array.from({ length: workerCount }, () => startService('worker', env))),
      enqueueAll(jobs, (i) => queues.enqueue('write', { store: 'main', key: `k/${i % KEY_SPACE}`, body: INLINE })),
    ]);
    workers.push(...started);
    const workerCpu = async () => (await Promise.all(workers.map((worker) => worker.stats()))).reduce((sum, stats) => sum + stats.cpuSeconds, 0);
    const before = await redisStats(producer);
    const [workerCpuBefore, cpuBefore] = await Promise.all([workerCpu(), machineCpu()]);
    const ownCpu = process.cpuUsage();
    const begin = performance.now();
    await queue.resume();
    await finished;
    const seconds = (performance.now() - begin) / 1000;
    const ownCpuUsed = process.cpuUsage(ownCpu);
    const [workerCpuAfter, cpuAfter] = await Promise.all([workerCpu(), machineCpu()]);
    const after = await redisStats(producer);
    await unsubscribe();
    const cpu = after.cpuSeconds - before.cpuSeconds;
    return {
      opsPerSec: jobs / seconds,
      redisBusy: cpu / seconds,
      redisCpuPerJobUs: (cpu / jobs) * 1e6,
      commandsPerJob: (after.commands - before.commands) / jobs,
      workerCpuPerJobUs: ((workerCpuAfter - workerCpuBefore) / jobs) * 1e6,
      benchCpuPerJobUs: (ownCpuUsed.user + ownCpuUsed.system) / jobs,
      machineBusy: cpuBefore && cpuAfter ? (cpuAfter.busy - cpuBefore.busy) / (cpuAfter.total - cpuBefore.total) : undefined,
    };
  } finally {
    await Promise.all(workers.map((worker) => worker.stop()));
    await bus.close();
    await queues.close();
    await deleteKeys(producer, prefix);
    await Promise.all([closeRedis(producer), closeRedis(subscriberConnection)]);
    await rm(root, { recursive: true, force: true });
  }
}

/** SET of 1 KiB values from 50 clients: what this Redis answers per second for the simplest write. */
async function redisBenchmark(port: number): Promise<number | undefined> {
  try {
    const { stdout } = await run('redis-benchmark', ['-h', '127.0.0.1', '-p', String(port), '-t', 'set', '-n', '200000', '-c', '50', '-d', '1024', '-q', '--csv'], {
      timeout: 120_000,
    });
    // "test","rps",...  then  "SET","123456.79",...
    const line = stdout.split('\n').find((row) => row.startsWith('"SET"'));
    return line === undefined ? undefined : Number(line.split(',')[1]!.replace(/"/g, ''));
  } catch {
    return undefined;
  }
}

/** Bytes Redis holds for the keys under `prefix`, by `MEMORY USAGE ... SAMPLES 0` (every element counted). */
async function prefixMemory(redis: RedisConnection, prefix: string): Promise<number> {
  const client = redis as Redis;
  let bytes = 0;
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix.replace(/[*?[\]\\]/g, (c) => `\\${c}`)}*`, 'COUNT', 1000);
    cursor = next;
    for (const key of keys) bytes += Number((await client.memory('USAGE', key, 'SAMPLES', 0)) ?? 0);
  } while (cursor !== '0');
  return bytes;
}

/**
 * Redis bytes per waiting write job: the memory of the queue's keys after `count` more jobs (no worker), per job.
 * Counted key by key rather than from `used_memory`, which moves with other clients and with lazy frees.
 */
async function memoryPerJob(redisUrl: string, bodyBytes: number, count: number): Promise<number> {
  const prefix = uniquePrefix('bench-scale-memory');
  const root = await mkdtemp(path.join(os.tmpdir(), 'kyozo-bench-scale-mem-'));
  const producer = await connect(redisUrl, 'producer');
  const queues = createQueues({ connection: producer, prefix, attempts: 5 });
  // The API's staging: inline up to 256 KiB, else the body goes to the staging store and the job carries a reference.
  const staging = createStaging({ provider: new DiskProvider({ root: path.join(root, 'staging'), fsync: false }), inlineMax: 256 * 1024 });
  const body = randomBytes(bodyBytes);
  try {
    // The queue's own keys (meta, id counter, event stream) exist before the first measured job.
    await queues.enqueue('write', { store: 'main', key: 'warm/up', body: await staging.stageBody(body) });
    const before = await prefixMemory(producer, prefix);
    for (let i = 0; i < count; i++) await queues.enqueue('write', { store: 'main', key: `mem/${i}`, body: await staging.stageBody(body) });
    return ((await prefixMemory(producer, prefix)) - before) / count;
  } finally {
    await queues.close();
    await deleteKeys(producer, prefix);
    await closeRedis(producer);
    await rm(root, { recursive: true, force: true });
  }
}

export async function runScaleBench(): Promise<BenchResult> {
  const notes: string[] = [];
  const rows: BenchRow[] = [];
  const unavailable = redisServerUnavailableReason();
  let server: RedisServer | undefined;
  if (unavailable === undefined) server = await startRedisServer();
  else notes.push(`no private redis-server (${unavailable}): ran on REDIS_URL (${TEST_REDIS_URL}), shared, so Redis CPU and memory figures include other clients`);
  const redisUrl = server?.url ?? TEST_REDIS_URL;
  try {
    const setOps = server !== undefined ? await redisBenchmark(server.port) : undefined;
    for (const kind of ['ram', 'disk'] as const) {
      await measureWorkers(redisUrl, kind, 1, 500); // warm: tsx compile cache, Lua scripts, directories
      const best = new Map<number, Throughput>();
      for (let pass = 0; pass < PASSES; pass++) {
        // Each pass in the other order, so a slow spell of the shared machine does not always hit the same count.
        for (const workerCount of pass % 2 === 0 ? WORKER_COUNTS : [...WORKER_COUNTS].reverse()) {
          const measured = await measureWorkers(redisUrl, kind, workerCount, JOBS[kind]);
          if ((best.get(workerCount)?.opsPerSec ?? 0) < measured.opsPerSec) best.set(workerCount, measured);
        }
      }
      const one = best.get(1)!;
      for (const workerCount of WORKER_COUNTS) {
        const measured = best.get(workerCount)!;
        const ratio = measured.opsPerSec / one.opsPerSec;
        const gated = kind === 'ram' && workerCount === 2;
        rows.push({
          name:
            `${kind}: ${workerCount} worker process${workerCount > 1 ? 'es' : ''} ` +
            `(Redis ${percent(measured.redisBusy)} of a core${measured.machineBusy === undefined ? '' : `, machine ${percent(measured.machineBusy)} busy`})`,
          p50Ms: Number.NaN,
          p99Ms: Number.NaN,
          opsPerSec: measured.opsPerSec,
          baseline: '1 worker process',
          baselineOpsPerSec: one.opsPerSec,
          ratio,
          ...(gated ? { target: '≥ 1.6× 1 worker', pass: ratio >= 1.6 } : {}),
        });
      }
      // Every job costs CPU in a worker, in Redis and (for its event) here; on this machine all of it shares the
      // same cores, which bounds what any number of worker processes can do.
      const perJob = one.workerCpuPerJobUs + one.redisCpuPerJobUs + one.benchCpuPerJobUs;
      const cpuCeiling = (os.cpus().length * 1e6) / perJob;
      rows.push({
        name:
          `${kind}: CPU-bound ceiling here (${os.cpus().length} cores / ${perJob.toFixed(0)} µs per job: ` +
          `${one.workerCpuPerJobUs.toFixed(0)} worker + ${one.redisCpuPerJobUs.toFixed(0)} Redis + ${one.benchCpuPerJobUs.toFixed(0)} event listener)`,
        p50Ms: Number.NaN,
        p99Ms: Number.NaN,
        opsPerSec: cpuCeiling,
        baseline: '1 worker process',
        baselineOpsPerSec: one.opsPerSec,
        ratio: cpuCeiling / one.opsPerSec,
      });
      const leanest = Math.min(...[...best.values()].map((measured) => measured.redisCpuPerJobUs));
      rows.push({
        name: `${kind}: Redis-bound ceiling (1 core / ${leanest.toFixed(0)} µs Redis CPU per job)`,
        p50Ms: Number.NaN,
        p99Ms: Number.NaN,
        opsPerSec: 1e6 / leanest,
        ...(setOps !== undefined ? { baseline: 'redis-benchmark SET 1KiB c=50', baselineOpsPerSec: setOps, ratio: 1e6 / leanest / setOps } : {}),
      });
      notes.push(
        `${kind}: worker processes spent ${one.workerCpuPerJobUs.toFixed(0)} µs CPU per job with 1, ${best.get(2)!.workerCpuPerJobUs.toFixed(0)} µs with 2, ${best.get(4)!.workerCpuPerJobUs.toFixed(0)} µs with 4; Redis spent ${one.redisCpuPerJobUs.toFixed(0)} µs CPU and ${one.commandsPerJob.toFixed(1)} commands per job (1 worker; ` +
          `${best.get(2)!.redisCpuPerJobUs.toFixed(0)} µs with 2, ${best.get(4)!.redisCpuPerJobUs.toFixed(0)} µs with 4)`,
      );
    }
    if (setOps === undefined) notes.push('redis-benchmark did not run (not on PATH, or no private redis-server): no SET figure');

    const small = await memoryPerJob(redisUrl, 1024, 500);
    const large = await memoryPerJob(redisUrl, 5 * 1024 * 1024, 40);
    rows.push(
      { name: 'Redis memory per waiting write, 1KiB (inline)', p50Ms: Number.NaN, p99Ms: Number.NaN, value: small, unit: 'B' },
      {
        name: 'Redis memory per waiting write, 5MiB (staged)',
        p50Ms: Number.NaN,
        p99Ms: Number.NaN,
        value: large,
        unit: 'B',
        baseline: '1KiB write',
        baselineValue: small,
        ratio: large / small,
        target: '≤ 4096 B',
        pass: large <= 4096,
      },
    );
  } finally {
    await server?.stop();
  }
  notes.push(
    `throughput: best of ${PASSES} passes (alternating order) of ${JOBS.ram} (ram) / ${JOBS.disk} (disk) 1 KiB writes queued before the clock starts, keys cycling over ${KEY_SPACE}; ` +
      `counted at the object.written event; each worker process WORKER_CONCURRENCY=8; ${os.cpus().length} cores shared by Redis, the workers and this process`,
    'CPU-bound ceiling: jobs/s if every core did only this work at the 1-worker CPU cost per job; its ratio is the most any number of worker processes could gain on this machine',
    'Redis-bound ceiling: jobs/s if Redis had one core to itself for this work (the least Redis CPU per job measured for the store); ratio = ceiling / SET ops/s',
    'machine busy % counts every process on the machine, other people\'s included (the machine is shared)',
    'memory: growth of MEMORY USAGE summed over the queue prefix\'s keys, per job, for 500 (1 KiB) / 40 (5 MiB) writes enqueued with no worker: the job hash, its wait-list entry and its entries in BullMQ\'s event stream',
  );
  return { suite: 'scale', machine: machineName(), rows, notes };
}
