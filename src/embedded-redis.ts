/**
 * `npm start` on a machine with no Redis: when `REDIS_URL` is unset and nothing answers on 127.0.0.1:6379, start
 * a private `redis-server` from PATH (data under `<STORAGE_ROOT_DIR>/redis`, AOF on, no eviction) on a free
 * loopback port, and say so. With no redis-server installed, fail with a message naming the ways to get one;
 * with one that does not start, with what it logged (`<dir>/redis.log`): never a silent hang. The server runs in its
 * own process group (a Ctrl-C stops it only after the jobs, last) and is stopped however this process exits; one
 * left running by a process that was killed outright is found again (`kyozo-redis.json`) and used, never doubled.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type { Logger } from './log.js';

export class RedisUnavailableError extends Error {}

/** Sends PING and waits for +PONG; false on refusal, silence or anything else. */
export function redisAnswers(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (answer: boolean) => {
      socket.destroy();
      resolve(answer);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (data) => done(data.toString().startsWith('+PONG')));
  });
}

/** A TCP port on loopback that nothing listens on right now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export interface PrivateRedis {
  url: string;
  stop(): Promise<void>;
}

/** Where the private server says which process and port it is: a later start finds one left running. */
const SERVER_FILE = 'kyozo-redis.json';
const LOG_FILE = 'redis.log';

const INSTALL_HINT =
  'Install one (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis), ' +
  'run one (docker run -p 6379:6379 redis:7), or point REDIS_URL at yours.';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Stops process `pid` with SIGTERM and waits until it is gone (Redis rewrites nothing on exit with `--save ""`). */
async function terminate(pid: number): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  while (isAlive(pid)) await new Promise((resolve) => setTimeout(resolve, 50));
}

/**
 * A server an earlier run left running on this data directory (its process was killed before it could stop it):
 * used again rather than started twice over the same AOF files.
 */
async function leftRunning(dir: string, log: Logger): Promise<PrivateRedis | undefined> {
  const known = await readFile(path.join(dir, SERVER_FILE), 'utf8').then(
    (text) => JSON.parse(text) as { pid: number; port: number },
    () => undefined,
  );
  if (known === undefined || !isAlive(known.pid) || !(await redisAnswers('127.0.0.1', known.port, 500))) return undefined;
  const url = `redis://127.0.0.1:${known.port}`;
  log.info({ url, dir, pid: known.pid }, 'using the private redis-server an earlier run left running');
  const killOnExit = () => {
    if (isAlive(known.pid)) process.kill(known.pid, 'SIGTERM');
  };
  process.once('exit', killOnExit);
  return {
    url,
    stop: async () => {
      process.off('exit', killOnExit);
      await terminate(known.pid);
      await forgetServer(dir);
    },
  };
}

/** A stopped server's file goes: a later start must not take an unrelated process reusing its pid for it. */
async function forgetServer(dir: string): Promise<void> {
  await unlink(path.join(dir, SERVER_FILE)).catch(() => undefined);
}

/** The last lines redis-server logged, for an error message. */
async function logTail(dir: string): Promise<string> {
  const text = await readFile(path.join(dir, LOG_FILE), 'utf8').catch(() => '');
  return text.trim().split('\n').slice(-3).join(' | ');
}

export async function startPrivateRedis(rootDir: string, log: Logger): Promise<PrivateRedis> {
  const dir = path.join(rootDir, 'redis');
  await mkdir(dir, { recursive: true });
  const adopted = await leftRunning(dir, log);
  if (adopted !== undefined) return adopted;
  const port = await freePort();
  const args = ['--bind', '127.0.0.1', '--port', String(port), '--dir', dir, '--appendonly', 'yes', '--maxmemory-policy', 'noeviction', '--save', ''];
  // Its own process group: a Ctrl-C in the terminal reaches this process, which stops Redis last, after the jobs.
  const child: ChildProcess = spawn('redis-server', [...args, '--logfile', path.join(dir, LOG_FILE)], { stdio: 'ignore', detached: true });
  const outcome = await new Promise<'started' | 'missing' | 'failed'>((resolve) => {
    child.once('error', (error: NodeJS.ErrnoException) => resolve(error.code === 'ENOENT' ? 'missing' : 'failed'));
    const poll = async (tries: number): Promise<void> => {
      if (child.exitCode !== null) return resolve('failed');
      if (await redisAnswers('127.0.0.1', port, 200)) return resolve('started');
      if (tries <= 0) return resolve('failed');
      setTimeout(() => void poll(tries - 1), 100);
    };
    void poll(100);
  });
  if (outcome !== 'started') {
    child.kill('SIGKILL');
    if (outcome === 'missing') {
      throw new RedisUnavailableError(`no Redis answers at redis://127.0.0.1:6379 and there is no redis-server on PATH. ${INSTALL_HINT}`);
    }
    throw new RedisUnavailableError(
      `no Redis answers at redis://127.0.0.1:6379 and the private redis-server did not start (exit code ${child.exitCode ?? 'none'}; ` +
        `${path.join(dir, LOG_FILE)}: ${(await logTail(dir)) || 'empty'}). Fix what it says, or point REDIS_URL at a Redis.`,
    );
  }
  await writeFile(path.join(dir, SERVER_FILE), JSON.stringify({ pid: child.pid, port }));
  // However this process ends short of a SIGKILL, the server goes with it (a synchronous kill works in 'exit').
  const killOnExit = () => child.kill('SIGTERM');
  process.once('exit', killOnExit);
  const url = `redis://127.0.0.1:${port}`;
  log.info({ url, dir }, 'started a private redis-server (REDIS_URL is unset and nothing answered on 127.0.0.1:6379)');
  return {
    url,
    stop: async () => {
      process.off('exit', killOnExit);
      if (child.exitCode === null && child.signalCode === null) {
        await new Promise<void>((resolve) => {
          child.once('exit', () => resolve());
          child.kill('SIGTERM');
        });
      }
      await forgetServer(dir);
    },
  };
}
