/**
 * Private `redis-server` processes from PATH on free loopback ports, in a temp directory removed on stop: the
 * nodes of the cluster test, and the benchmarks' own Redis (so Redis memory and CPU figures are theirs alone).
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { freePort } from '../../src/embedded-redis.js';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Why `redis-server` (and `redis-cli`) cannot be started here, or undefined when they can. */
export function redisServerUnavailableReason(): string | undefined {
  for (const tool of ['redis-server', 'redis-cli']) {
    const probe = spawnSync(tool, ['--version'], { encoding: 'utf8' });
    if (probe.error !== undefined || probe.status !== 0) return `${tool} is not on PATH`;
  }
  return undefined;
}

export { freePort };

export async function redisCli(port: number, ...args: string[]): Promise<string> {
  return (await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 60_000 })).stdout;
}

export async function until(probe: () => Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export interface RedisServer {
  port: number;
  url: string;
  dir: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

/** One server, no persistence, answering PING; `args` are added to its command line. */
export async function startRedisServer(args: string[] = [], dir?: string): Promise<RedisServer> {
  const ownDir = dir === undefined;
  const workDir = dir ?? (await mkdtemp(path.join(os.tmpdir(), 'kyozo-redis-')));
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', workDir, '--save', '', '--appendonly', 'no', ...args], {
    stdio: 'ignore',
  });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      await new Promise<void>((resolve) => {
        child.once('exit', () => resolve());
        child.kill('SIGKILL');
      });
    }
    if (ownDir) await rm(workDir, { recursive: true, force: true });
  };
  try {
    await until(async () => (await redisCli(port, 'ping')).trim() === 'PONG', `redis-server on ${port} to answer`);
  } catch (error) {
    await stop();
    throw error;
  }
  return { port, url: `redis://127.0.0.1:${port}`, dir: workDir, process: child, stop };
}
