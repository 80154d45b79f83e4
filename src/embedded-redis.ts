/**
 * `npm start` on a machine with no Redis: when `REDIS_URL` is unset and nothing answers on 127.0.0.1:6379, start
 * a private `redis-server` from PATH (data under `<STORAGE_ROOT_DIR>/redis`, AOF on, no eviction) on a free
 * loopback port, and say so. With no redis-server installed, fail with a message naming the ways to get one:
 * never a silent hang.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
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

export async function startPrivateRedis(rootDir: string, log: Logger): Promise<PrivateRedis> {
  const dir = path.join(rootDir, 'redis');
  await mkdir(dir, { recursive: true });
  const port = await freePort();
  const args = ['--bind', '127.0.0.1', '--port', String(port), '--dir', dir, '--appendonly', 'yes', '--maxmemory-policy', 'noeviction', '--save', ''];
  const child: ChildProcess = spawn('redis-server', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const started = await new Promise<boolean>((resolve) => {
    child.once('error', () => resolve(false)); // ENOENT: not installed
    const poll = async (tries: number): Promise<void> => {
      if (child.exitCode !== null) return resolve(false);
      if (await redisAnswers('127.0.0.1', port, 200)) return resolve(true);
      if (tries <= 0) return resolve(false);
      setTimeout(() => void poll(tries - 1), 100);
    };
    void poll(100);
  });
  if (!started) {
    child.kill('SIGKILL');
    throw new RedisUnavailableError(
      'no Redis answers at redis://127.0.0.1:6379 and no redis-server could be started from PATH. ' +
        'Install one (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis), ' +
        'run one (docker run -p 6379:6379 redis:7), or point REDIS_URL at yours.',
    );
  }
  const url = `redis://127.0.0.1:${port}`;
  log.info({ url, dir }, 'started a private redis-server (REDIS_URL is unset and nothing answered on 127.0.0.1:6379)');
  return {
    url,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}
