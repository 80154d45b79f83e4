/**
 * The private redis-server of `npm start` (used when REDIS_URL is unset and no Redis listens on 6379), started here
 * directly on temp directories: how it starts, fails, stops, is found again, and is shared by several processes
 * (`support/private-redis-user.ts` is the other process). And what decides it, asked of throw-away servers on free
 * ports standing in for 6379 (`useLocalRedis`).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort, redisAnswers, startPrivateRedis, useLocalRedis, type PrivateRedis } from '../src/embedded-redis.js';
import { redisServerUnavailableReason, startRedisServer } from './cluster/redis-server.js';
import { quietLog } from './support/service.js';

const unavailable = redisServerUnavailableReason();
if (unavailable !== undefined) console.log(`private redis-server tests skipped: ${unavailable}`);

const dirs: string[] = [];
const started: PrivateRedis[] = [];
const others: ChildProcess[] = [];
const USER = path.resolve(import.meta.dirname, 'support/private-redis-user.ts');

async function root(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kyozo-private-redis-'));
  dirs.push(dir);
  return dir;
}

const portOf = (url: string) => Number(new URL(url).port);
const passwordOf = (url: string) => new URL(url).password || undefined;
/** Whether the server at `url` answers PONG to a client that gives its password. */
const answers = (url: string) => redisAnswers('127.0.0.1', portOf(url), 1000, passwordOf(url));
const recordFile = (dir: string) => path.join(dir, 'redis', 'kyozo-redis.json');
const serverFile = async (dir: string) => JSON.parse(await readFile(recordFile(dir), 'utf8')) as { pid: number; port: number; password?: string };
const processGroup = async (pid: number) => Number((await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ')[2]);

/**
 * Whether process `pid` has ended (a zombie counts as ended). Asked of the server's process, not of its port: other test
 * files start servers on free ports at the same time, and one may take a port just freed.
 */
function ended(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat[stat.lastIndexOf(')') + 2] === 'Z';
}

const exited = (child: ChildProcess) =>
  child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((resolve) => child.once('exit', resolve));

/** Another process that starts (or joins) the server of `dir` and uses it until SIGTERM. */
async function otherProcessUsing(dir: string): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', USER, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  others.push(child);
  const url = await new Promise<string>((resolve, reject) => {
    let output = '';
    child.stdout!.on('data', (chunk) => {
      output += chunk;
      if (output.includes('\n')) resolve(output.trim());
    });
    child.once('exit', (code) => reject(new Error(`the other process exited (${code}) before it used the server`)));
  });
  return { child, url };
}

afterEach(async () => {
  for (const child of others.splice(0)) {
    child.kill('SIGKILL');
    await exited(child);
  }
  for (const redis of started.splice(0)) await redis.stop();
  for (const dir of dirs.splice(0)) {
    await serverFile(dir).then(({ pid }) => process.kill(pid, 'SIGKILL')).catch(() => undefined); // one a test left behind
    await rm(dir, { recursive: true, force: true });
  }
});

describe.skipIf(unavailable !== undefined)('private redis-server', () => {
  it('starts in a process group of its own (a Ctrl-C reaches only this process), and stops', async () => {
    const dir = await root();
    await mkdir(path.join(dir, 'redis'), { mode: 0o755 }); // made by hand before, readable by all
    const redis = await startPrivateRedis(dir, quietLog);
    started.push(redis);
    // Its AOF holds job bodies and the URL-signing secret: no other user may read it.
    expect((await stat(path.join(dir, 'redis'))).mode & 0o777).toBe(0o700);
    expect(await answers(redis.url)).toBe(true);
    const { pid } = await serverFile(dir);
    expect(await processGroup(pid)).not.toBe(await processGroup(process.pid));
    await redis.stop();
    expect(ended(pid)).toBe(true);
    await expect(serverFile(dir)).rejects.toThrow(); // a later start cannot take a reused pid for it
  });

  it('uses a server an earlier run left running on the same directory rather than starting a second one', async () => {
    const dir = await root();
    const killed = await otherProcessUsing(dir);
    killed.child.kill('SIGKILL'); // no chance to stop it
    await exited(killed.child);
    const again = await startPrivateRedis(dir, quietLog);
    started.push(again);
    expect(again.url).toBe(killed.url);
    const { pid } = await serverFile(dir);
    await again.stop();
    expect(ended(pid)).toBe(true);
  });

  it("goes on running while another process uses it: a second npm start that stops never stops the first one's", async () => {
    const dir = await root();
    const first = await otherProcessUsing(dir);
    const second = await startPrivateRedis(dir, quietLog);
    started.push(second);
    expect(second.url).toBe(first.url);
    const { pid } = await serverFile(dir);
    await second.stop();
    expect(await answers(first.url)).toBe(true);
    first.child.kill('SIGTERM');
    await exited(first.child);
    expect(ended(pid)).toBe(true); // the last one to stop stops it
  });

  it('goes on running for the process that joined it when the one that started it stops', async () => {
    const dir = await root();
    const first = await otherProcessUsing(dir);
    const second = await startPrivateRedis(dir, quietLog);
    started.push(second);
    const { pid } = await serverFile(dir);
    first.child.kill('SIGTERM');
    await exited(first.child);
    expect(await answers(second.url)).toBe(true);
    await second.stop();
    expect(ended(pid)).toBe(true);
  });

  it('starts one server when two starts on one directory run at once', async () => {
    const dir = await root();
    const [first, second] = await Promise.all([startPrivateRedis(dir, quietLog), startPrivateRedis(dir, quietLog)]);
    started.push(first, second);
    expect(second.url).toBe(first.url);
    const { pid } = await serverFile(dir);
    await first.stop();
    expect(await answers(second.url)).toBe(true);
    await second.stop();
    expect(ended(pid)).toBe(true);
  });

  it('waits while a live process holds the directory lock, and takes a lock whose process is gone', async () => {
    const dir = await root();
    const lock = path.join(dir, 'redis', 'kyozo-redis.lock');
    await mkdir(path.dirname(lock), { recursive: true });
    await writeFile(lock, String(process.ppid)); // a live process, in the middle of its start
    let settledAt = Number.POSITIVE_INFINITY;
    const starting = startPrivateRedis(dir, quietLog).finally(() => (settledAt = Date.now()));
    await new Promise((resolve) => setTimeout(resolve, 500));
    const releasedAt = Date.now();
    await writeFile(lock, String(spawnSync('true').pid)); // its holder died with it
    started.push(await starting);
    expect(settledAt).toBeGreaterThanOrEqual(releasedAt);
    await expect(readFile(lock)).rejects.toThrow(); // and this start let it go
  });

  it('starts one server when two starts in one process name the directory two ways (a symlink)', async () => {
    const dir = await root();
    const link = `${dir}-link`;
    await symlink(dir, link);
    try {
      const [first, second] = await Promise.all([startPrivateRedis(dir, quietLog), startPrivateRedis(link, quietLog)]);
      started.push(first, second);
      expect(second.url).toBe(first.url);
    } finally {
      await rm(link, { force: true });
    }
  });

  it('takes at once a lock naming this process, which holds none: its pid is a dead holder\'s reused (a container\'s pid 1)', async () => {
    const dir = await root();
    const lock = path.join(dir, 'redis', 'kyozo-redis.lock');
    await mkdir(path.dirname(lock), { recursive: true });
    await writeFile(lock, String(process.pid));
    const begun = Date.now();
    started.push(await startPrivateRedis(dir, quietLog));
    expect(Date.now() - begun).toBeLessThan(10_000); // a live holder's lock is waited for up to 60 s
  });

  it('waits for the server of this directory while it is busy (a long script), rather than starting a second one', async () => {
    const dir = await root();
    const first = await startPrivateRedis(dir, quietLog);
    started.push(first);
    const busy = new Redis(first.url);
    try {
      // Redis runs one command at a time: for two seconds PING gets no answer.
      const script = busy.eval("local s = tonumber(redis.call('TIME')[1]) while tonumber(redis.call('TIME')[1]) - s < 2 do end return 1", 0);
      await new Promise((resolve) => setTimeout(resolve, 100));
      const second = await otherProcessUsing(dir); // a second npm start on the directory
      expect(await script).toBe(1);
      expect(second.url).toBe(first.url);
    } finally {
      busy.disconnect();
    }
  });

  it('asks for a password: a client without it gets NOAUTH (another local user), one with its url gets PONG', async () => {
    const redis = await startPrivateRedis(await root(), quietLog);
    started.push(redis);
    const anonymous = spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(portOf(redis.url)), 'ping'], { encoding: 'utf8' });
    expect(anonymous.stdout + anonymous.stderr).toMatch(/NOAUTH/);
    const client = new Redis(redis.url);
    try {
      expect(await client.ping()).toBe('PONG');
    } finally {
      client.disconnect();
    }
  });

  it('keeps the password off its command line (every user sees it in ps), in a record file only its user reads', async () => {
    const dir = await root();
    const redis = await startPrivateRedis(dir, quietLog);
    started.push(redis);
    const password = passwordOf(redis.url)!;
    expect(password).toBeDefined();
    const { pid, password: recorded } = await serverFile(dir);
    expect(recorded).toBe(password);
    expect(await readFile(`/proc/${pid}/cmdline`, 'utf8')).not.toContain(password);
    expect((await stat(recordFile(dir))).mode & 0o777).toBe(0o600);
  });

  it('never logs the password: not when it starts, is joined, or is left running for another user', async () => {
    const dir = await root();
    const lines: string[] = [];
    const log = pino({}, { write: (line: string) => lines.push(line) });
    const first = await startPrivateRedis(dir, log);
    started.push(first);
    const second = await startPrivateRedis(dir, log);
    started.push(second);
    expect(second.url).toBe(first.url);
    await first.stop(); // left running for the second
    expect(lines).toHaveLength(3);
    const password = passwordOf(first.url)!;
    expect(password).toBeDefined();
    for (const line of lines) {
      expect(line).toContain(`"url":"redis://127.0.0.1:${portOf(first.url)}"`);
      expect(line).not.toContain(password);
    }
  });

  it('joins a server an older version started without a password (its record has none), and makes the record 0600', async () => {
    const dir = await root();
    const old = await startRedisServer();
    try {
      const user = spawnSync('true').pid; // the older version's process, gone
      await mkdir(path.join(dir, 'redis'), { recursive: true });
      await writeFile(recordFile(dir), JSON.stringify({ pid: old.process.pid, port: old.port, users: [user] }), { mode: 0o644 });
      const redis = await startPrivateRedis(dir, quietLog);
      started.push(redis);
      expect(redis.url).toBe(old.url);
      const client = new Redis(redis.url);
      try {
        expect(await client.ping()).toBe('PONG');
      } finally {
        client.disconnect();
      }
      expect((await stat(recordFile(dir))).mode & 0o777).toBe(0o600);
      await redis.stop();
      expect(ended(old.process.pid!)).toBe(true); // its last user stopped it
    } finally {
      await old.stop();
    }
  });

  it('refuses at once, saying why and never quoting a password, a server whose password its record does not match', async () => {
    const serverWith = async (password?: string) => {
      const port = await freePort();
      const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', ...(password === undefined ? [] : ['--requirepass', password])];
      const server = spawn('redis-server', args, { stdio: 'ignore' });
      others.push(server);
      while (!(await redisAnswers('127.0.0.1', port, 200, password))) await new Promise((resolve) => setTimeout(resolve, 100));
      return { pid: server.pid!, port };
    };
    const guarded = await serverWith('not-in-the-record');
    const open = await serverWith(); // started without one (another version's), its record naming one
    const cases = [
      { server: guarded, password: undefined, says: /asks for a password its record does not hold/ },
      { server: guarded, password: 'another-password', says: /refuses the password its record holds/ },
      { server: open, password: 'a-password-it-does-not-ask-for', says: /asks for no password, and its record holds one/ },
    ];
    for (const { server, password, says } of cases) {
      const dir = await root();
      await mkdir(path.join(dir, 'redis'), { recursive: true });
      await writeFile(recordFile(dir), JSON.stringify({ pid: server.pid, port: server.port, password, users: [] }));
      const started = Date.now();
      const error = (await startPrivateRedis(dir, quietLog).catch((caught: unknown) => caught)) as Error;
      expect(error.message).toMatch(says);
      expect(error.message).toMatch(/stop it \(kill \d+\)/);
      if (password !== undefined) expect(error.message).not.toContain(password); // Redis's -ERR to AUTH repeats it
      expect(Date.now() - started).toBeLessThan(5_000); // not the minute a busy server is waited for
    }
  });

  it('says what redis-server logged when it cannot start on the data directory', async () => {
    const dir = await root();
    await mkdir(path.join(dir, 'redis', 'appendonlydir'), { recursive: true });
    await writeFile(path.join(dir, 'redis', 'appendonlydir', 'appendonly.aof.manifest'), 'garbage\n');
    await expect(startPrivateRedis(dir, quietLog)).rejects.toThrow(/did not start.*AOF manifest/);
  });
});

const closers: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

/** A TCP server on a free loopback port that answers each connection's first bytes with `reply` (none: silence). */
async function notRedis(reply?: string): Promise<number> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    if (reply !== undefined) socket.once('data', () => socket.end(reply));
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  closers.push(() => {
    for (const socket of sockets) socket.destroy();
    return new Promise((resolve) => server.close(resolve));
  });
  return port;
}

describe('useLocalRedis: whether npm start, REDIS_URL unset, uses the Redis on 6379', () => {
  it('does not when nothing listens there: the private redis-server is started', async () => {
    expect(await useLocalRedis('127.0.0.1', await freePort(), quietLog)).toBe(false);
  });

  it('does not when what listens there is not Redis: the private redis-server is on a port of its own', async () => {
    const port = await notRedis('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    expect(await useLocalRedis('127.0.0.1', port, quietLog)).toBe(false);
  });

  it.skipIf(unavailable !== undefined)('waits for a Redis too busy to answer within the probe (a long script), then uses it', async () => {
    const redis = await startRedisServer();
    closers.push(() => redis.stop());
    const busy = new Redis(redis.url);
    closers.push(async () => busy.disconnect());
    // Redis runs one command at a time: for two seconds PING gets no answer.
    const script = busy.eval("local s = tonumber(redis.call('TIME')[1]) while tonumber(redis.call('TIME')[1]) - s < 2 do end return 1", 0);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await useLocalRedis('127.0.0.1', redis.port, quietLog)).toBe(true);
    expect(await script).toBe(1);
  });

  it('does not when what listens there stays silent past a script\'s time limit: DESIGN §2, nothing answers', async () => {
    const port = await notRedis(); // accepts, never answers
    const started = performance.now();
    expect(await useLocalRedis('127.0.0.1', port, quietLog)).toBe(false);
    expect(performance.now() - started).toBeLessThan(15_000); // not the 60 s a loading Redis is given
  }, 30_000);

  it('stops waiting at a signal (a SIGTERM while it waits for a busy Redis)', async () => {
    const port = await notRedis(); // silent, as a busy Redis
    const abort = new AbortController();
    const deciding = useLocalRedis('127.0.0.1', port, quietLog, abort.signal);
    await new Promise((resolve) => setTimeout(resolve, 1500)); // past the first probe: waiting
    const signalled = performance.now();
    abort.abort();
    await expect(deciding).rejects.toMatchObject({ name: 'AbortError' });
    expect(performance.now() - signalled).toBeLessThan(500);
  });
});
