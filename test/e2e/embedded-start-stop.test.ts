/**
 * `npm start`'s entry (src/main.ts), and the web and worker entries, as child processes, stopped during their start
 * and after it: a signal at any moment stops the private redis-server with it, and a start that fails takes no job.
 * The private-redis cases preload `support/no-redis-on-6379.ts`, so the child sees no Redis on 6379, and the cases of
 * another Redis there `support/redirect-6379.ts`: the shared one is never touched.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from '../../src/embedded-redis.js';
import { redisCli, redisServerUnavailableReason, startRedisServer, until } from '../cluster/redis-server.js';
import { deleteKeys, TEST_REDIS_URL } from '../support/redis.js';
import { startTestService, type TestService } from '../support/service.js';

const root = path.resolve(import.meta.dirname, '../..');
const NO_REDIS_ON_6379 = pathToFileURL(path.join(root, 'test/support/no-redis-on-6379.ts')).href;
const REDIRECT_6379 = pathToFileURL(path.join(root, 'test/support/redirect-6379.ts')).href;

interface Started {
  child: ChildProcess;
  output(): string;
  waitFor(pattern: RegExp): Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const children: ChildProcess[] = [];
const cleanups: (() => Promise<unknown>)[] = [];

afterEach(async () => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function npmStart(env: Record<string, string>, preload: string[] = [], entry = 'src/main.ts'): Started {
  const child = spawn(process.execPath, ['--import', 'tsx', ...preload.flatMap((file) => ['--import', file]), entry], {
    cwd: root,
    env: { ...process.env, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let output = '';
  // Checked on every chunk, not polled: a test signals the moment a line appears, in the middle of the start.
  const waiters = new Set<() => void>();
  const onOutput = (chunk: Buffer) => {
    output += chunk;
    for (const check of waiters) check();
  };
  child.stdout!.on('data', onOutput);
  child.stderr!.on('data', onOutput);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      resolve({ code, signal });
      for (const check of waiters) check();
    }),
  );
  const waitFor = (pattern: RegExp) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (pattern.test(output)) resolve();
        else if (child.exitCode !== null || child.signalCode !== null) reject(new Error(`exited before ${pattern}:\n${output}`));
        else return;
        waiters.delete(check);
      };
      waiters.add(check);
      check();
    });
  return { child, output: () => output, exited, waitFor };
}

/** `npm start` with REDIS_URL unset, on a fresh data directory; `preload` decides what it finds on 6379. */
async function npmStartUnconfigured(preload: string, env: Record<string, string> = {}): Promise<{ started: Started; dir: string }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kyozo-start-stop-'));
  const started = npmStart({ REDIS_URL: '', REDIS_CLUSTER_NODES: '', STORAGE_ROOT_DIR: dir, PORT: String(await freePort()), ...env }, [preload]);
  cleanups.push(async () => {
    const record = await readFile(path.join(dir, 'redis', 'kyozo-redis.json'), 'utf8').catch(() => undefined);
    if (record !== undefined) process.kill((JSON.parse(record) as { pid: number }).pid, 'SIGKILL'); // a test that failed
    await rm(dir, { recursive: true, force: true });
  });
  return { started, dir };
}

/** `npm start` on a fresh data directory with no Redis to find: it starts its private redis-server there. */
async function withPrivateRedis(): Promise<{ started: Started; dir: string }> {
  const { started, dir } = await npmStartUnconfigured(NO_REDIS_ON_6379);
  await started.waitFor(/started a private redis-server/);
  return { started, dir };
}

const privatePort = (started: Started) => Number(/"url":"redis:\/\/127\.0\.0\.1:(\d+)"/.exec(started.output())![1]);

/** Whether anything accepts connections on the port: a stopped server refuses (a PING would get NOAUTH either way). */
const listens = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });

describe.skipIf(redisServerUnavailableReason() !== undefined)('npm start with its private redis-server', () => {
  it('a SIGTERM during the start stops the private redis-server and exits', async () => {
    const { started } = await withPrivateRedis();
    const port = privatePort(started);
    started.child.kill('SIGTERM');
    expect((await started.exited).signal).toBeNull(); // handled, not killed by it
    await until(async () => !(await listens(port)), 'the private redis-server to stop', 15_000);
  });

  it('a SIGHUP (a closed terminal) stops it like a SIGTERM', async () => {
    const { started, dir } = await withPrivateRedis();
    await started.waitFor(/kyozo ready/);
    started.child.kill('SIGHUP');
    expect(await started.exited).toEqual({ code: 0, signal: null });
    expect(await listens(privatePort(started))).toBe(false);
    await expect(readFile(path.join(dir, 'redis', 'kyozo-redis.json'))).rejects.toThrow();
  });

  it('logs the URL of its private redis-server without the password the server asks for', async () => {
    const { started, dir } = await withPrivateRedis();
    await started.waitFor(/kyozo ready/);
    const { password } = JSON.parse(await readFile(path.join(dir, 'redis', 'kyozo-redis.json'), 'utf8')) as { password: string };
    started.child.kill('SIGTERM');
    expect(await started.exited).toEqual({ code: 0, signal: null });
    expect(password).toBeTruthy();
    expect(started.output()).not.toContain(password);
  });
});

/**
 * A Redis with a dataset that takes ~10 s to load (a machine's Redis after a reboot), on a free port: started once
 * to write the dataset, then again to load it slowly. Resolves once it answers -LOADING.
 */
async function loadingRedis(): Promise<{ port: number }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kyozo-loading-redis-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const writer = await startRedisServer(['--enable-debug-command', 'local'], dir);
  const redis = new Redis(writer.url);
  await redis.call('DEBUG', 'POPULATE', '40000');
  await redis.save();
  redis.disconnect();
  await writer.stop(); // its dump.rdb stays in `dir`
  const port = await freePort();
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'];
  // 200 µs per key, and clients answered while it loads: -LOADING, not silence.
  const loading = spawn('redis-server', [...args, '--key-load-delay', '200', '--loading-process-events-interval-bytes', '1024'], { stdio: 'ignore' });
  cleanups.push(async () => {
    if (loading.kill('SIGKILL')) await new Promise((resolve) => loading.once('exit', resolve));
  });
  await until(async () => (await redisCli(port, 'ping')).startsWith('LOADING'), 'the stand-in Redis to be loading');
  return { port };
}

describe.skipIf(redisServerUnavailableReason() !== undefined)('npm start with REDIS_URL unset and a Redis on 6379 that does not answer PONG', () => {
  it('waits for a Redis that is loading its dataset, then uses it: an empty private one would strand its jobs', async () => {
    const { port } = await loadingRedis();
    const { started } = await npmStartUnconfigured(REDIRECT_6379, { REDIRECT_6379_TO: String(port) });
    await started.waitFor(/kyozo ready/);
    expect(started.output()).toMatch(/-LOADING.*waiting for the Redis there to answer PING/);
    expect(started.output()).not.toMatch(/private redis-server/);
    expect(await redisCli(port, 'client', 'list')).toMatch(/name=kyozo:web/);
  });

  it('exits 1 naming the reply of a Redis that wants a password (NOAUTH), and how to give it one', async () => {
    const redis = await startRedisServer();
    cleanups.push(() => redis.stop());
    await redisCli(redis.port, 'config', 'set', 'requirepass', 'a-password');
    const { started } = await npmStartUnconfigured(REDIRECT_6379, { REDIRECT_6379_TO: String(redis.port) });
    await Promise.race([started.exited, started.waitFor(/started a private redis-server/).catch(() => undefined)]);
    expect(started.output()).not.toMatch(/private redis-server/);
    expect(await started.exited).toEqual({ code: 1, signal: null });
    expect(started.output()).toMatch(/cannot start: .*-NOAUTH.*set REDIS_URL with its password/);
  });
});

describe('an entry that cannot listen on its port', () => {
  it.each([
    { name: 'npm start', entry: 'src/main.ts', portVariable: 'PORT' },
    { name: 'the worker entry', entry: 'src/workers/main.ts', portVariable: 'WORKER_METRICS_PORT' },
  ])('$name, on a $portVariable already taken, exits 1 without taking a job or registering a schedule', async ({ entry, portVariable }) => {
    const producer: TestService = await startTestService('e2e-taken-port', {}, { worker: false });
    cleanups.push(() => producer.close());
    for (let i = 0; i < 5; i++) {
      expect((await producer.app.request(`/v1/stores/files/objects/taken/${i}`, { method: 'PUT', body: 'x' })).status).toBe(202);
    }
    const taken = net.createServer();
    const port = await freePort();
    await new Promise<void>((resolve) => taken.listen(port, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => taken.close(resolve)));

    const { config } = producer;
    const started = npmStart(
      {
        REDIS_URL: config.redis.url,
        QUEUE_PREFIX: config.queuePrefix,
        STORAGE_ROOT_DIR: producer.root,
        STORES: 'files:disk,mem:ram',
        [portVariable]: String(port),
      },
      [],
      entry,
    );
    expect(await started.exited).toEqual({ code: 1, signal: null });
    expect(started.output()).toMatch(/cannot start: .*EADDRINUSE/);
    const queues = producer.deps.queues;
    expect(await queues.queue('objects').getJobCounts('wait', 'active', 'completed', 'failed')).toEqual({ wait: 5, active: 0, completed: 0, failed: 0 });
    expect(await queues.queue('maintenance').getJobSchedulers()).toEqual([]);
  });
});

describe('the worker and web entries while Redis does not answer', () => {
  it.each([
    { name: 'the worker entry', entry: 'src/workers/main.ts' },
    { name: 'the web entry', entry: 'src/api/main.ts' },
  ])('$name exits 0 at once on SIGTERM: waiting for Redis does not hold up the signal', async ({ entry }) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'kyozo-no-redis-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const env = { REDIS_URL: `redis://127.0.0.1:${await freePort()}`, STORES: 'main:ram', STORAGE_ROOT_DIR: dir, PORT: String(await freePort()) };
    const started = npmStart(env, [], entry);
    await started.waitFor(/ECONNREFUSED/);
    const signalled = performance.now();
    started.child.kill('SIGTERM');
    expect(await started.exited).toEqual({ code: 0, signal: null });
    // Not when its wait would end: the web's after 10 s (it gives up on Redis), the worker's at the deadline (40 s).
    expect(performance.now() - signalled).toBeLessThan(5_000);
    expect(started.output()).not.toMatch(/(worker|web) ready/);
  });
});

describe('the worker entry with WORKER_METRICS_PORT', () => {
  it('a scrape stalled half-sent does not hold up a SIGTERM: no job is taken after it, and it exits 0', async () => {
    const producer = await startTestService('e2e-metrics-stall', {}, { worker: false });
    cleanups.push(() => producer.close());
    const metricsPort = await freePort();
    const { config } = producer;
    const env = {
      REDIS_URL: config.redis.url,
      QUEUE_PREFIX: config.queuePrefix,
      STORAGE_ROOT_DIR: producer.root,
      STORES: 'files:disk,mem:ram',
      WORKER_METRICS_PORT: String(metricsPort),
      WORKER_SHUTDOWN_TIMEOUT_MS: '1000',
    };
    const started = npmStart(env, [], 'src/workers/main.ts');
    await started.waitFor(/worker ready/);
    const scrape = net.connect(metricsPort, '127.0.0.1');
    cleanups.push(async () => scrape.destroy());
    await new Promise<void>((resolve) => scrape.once('connect', resolve));
    scrape.write('GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n'); // the headers never end
    await new Promise((resolve) => setTimeout(resolve, 200)); // the server has read them

    const signalled = performance.now();
    started.child.kill('SIGTERM');
    await started.waitFor(/shutting down/);
    await new Promise((resolve) => setTimeout(resolve, 300)); // the workers have closed by now
    expect((await producer.app.request('/v1/stores/files/objects/after-sigterm', { method: 'PUT', body: 'x' })).status).toBe(202);
    expect(await started.exited).toEqual({ code: 0, signal: null });
    expect(performance.now() - signalled).toBeLessThan(5_000); // the deadline would end it after 11 s, with 1
    expect(await producer.deps.queues.queue('objects').getJobCounts('wait', 'active', 'completed')).toEqual({ wait: 1, active: 0, completed: 0 });
  });
});

/**
 * `npm start` itself (npm, its shell, node) in a process group of its own, on a fresh data directory: whatever
 * outlives npm is found and killed by the cleanup.
 */
async function npmStartGroup(name: string): Promise<{ npm: ChildProcess; port: number; output(): string; exited: Promise<number | null> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `kyozo-${name}-`));
  const prefix = `{${name}-${process.pid}}`;
  const port = await freePort();
  const npm = spawn('npm', ['start'], {
    cwd: root,
    env: { ...process.env, LOG_LEVEL: 'info', REDIS_URL: TEST_REDIS_URL, STORAGE_ROOT_DIR: dir, PORT: String(port), QUEUE_PREFIX: prefix },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  cleanups.push(async () => {
    try {
      process.kill(-npm.pid!, 'SIGKILL');
    } catch {
      // the group is gone
    }
    await rm(dir, { recursive: true, force: true });
    const redis = new Redis(TEST_REDIS_URL);
    await deleteKeys(redis, prefix);
    redis.disconnect();
  });
  let output = '';
  npm.stdout!.on('data', (chunk: Buffer) => (output += chunk));
  npm.stderr!.on('data', (chunk: Buffer) => (output += chunk));
  const exited = new Promise<number | null>((resolve) => npm.once('exit', (code) => resolve(code)));
  await until(async () => output.includes('kyozo ready'), 'npm start to be ready', 60_000);
  return { npm, port, output: () => output, exited };
}

describe('npm start itself', () => {
  it('a SIGTERM to npm reaches the service, which shuts down gracefully', async () => {
    const { npm, output } = await npmStartGroup('npm-start');
    npm.kill('SIGTERM'); // npm only, as a process manager stopping it would
    await until(async () => output().includes('shutdown complete'), 'the service to shut down', 30_000);
  });

  it('one Ctrl-C (SIGINT to the whole process group) is one signal: an upload in flight is answered, then it exits 0', async () => {
    const { npm, port, output, exited } = await npmStartGroup('npm-ctrlc');

    // Half of a body sent, then Ctrl-C as a terminal sends it: SIGINT to npm and every process under it at once.
    const half = Buffer.alloc(32 * 1024, 'a');
    const socket = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve) => socket.once('connect', resolve));
    let answer = '';
    socket.on('data', (chunk: Buffer) => (answer += chunk));
    // `Expect: 100-continue`: the 100 says the route is reading the body, so the signal lands mid-request.
    socket.write(
      `PUT /v1/stores/default/objects/ctrl-c HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Length: ${half.length * 2}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`,
    );
    await until(async () => answer.includes('100 Continue'), 'the route to ask for the body', 10_000);
    socket.write(half);
    process.kill(-npm.pid!, 'SIGINT');
    await until(async () => output().includes('shutting down'), 'the shutdown to begin', 10_000);
    socket.write(half); // not end(): Node's server drops a request whose client half-closes
    await new Promise<void>((resolve) => socket.once('close', () => resolve()));

    expect(answer, output()).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 202 /);
    expect(await exited).toBe(0);
    expect(output()).not.toContain('second signal');
    expect(output()).toContain('shutdown complete');
  });
});
