/**
 * `npm start` on a machine with no Redis: when `REDIS_URL` is unset and no Redis listens on 127.0.0.1:6379
 * (`useLocalRedis`), start a private `redis-server` from PATH (data under `<STORAGE_ROOT_DIR>/redis`, AOF on, no
 * eviction) on a free loopback port, and say so. With no redis-server installed, fail with a message naming the ways
 * to get one; with one that does not start, with what it logged (`<dir>/redis.log`): never a silent hang. The server
 * runs in its own process group (a Ctrl-C stops it only after the jobs, last) and is stopped however this process
 * exits; one left running by a process that was killed outright is found again (`kyozo-redis.json`) and used, never
 * doubled. Several processes on one data directory share its server (a lock file makes their starts and stops take
 * turns): each is listed as a user, and the last one to stop stops it. Other local users cannot use it: it asks for a
 * password generated at each start, kept in the 0600 `kyozo-redis.json`, never on its command line or in a log.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, fchmodSync, openSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { chmod, mkdir, readFile, realpath, unlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { unlessAborted } from './lifecycle.js';
import type { Logger } from './log.js';
import { withProcessMutex } from './providers/process-mutex.js';

export class RedisUnavailableError extends Error {}

/**
 * What a PING gets: `refused` (nothing listens), `silent` (no reply in time), `closed` (the connection ended with no
 * reply), or the reply's first line: `+PONG`, an error (`-LOADING …`, `-NOAUTH …`), or what something else says.
 */
type PingAnswer = { kind: 'refused' | 'silent' | 'closed' } | { kind: 'reply'; line: string };

/** With a password, AUTH goes first and the PING's reply is the second line, unless AUTH's is an error (`-WRONGPASS`). */
function ping(host: string, port: number, timeoutMs = 1000, password?: string): Promise<PingAnswer> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    let connected = false;
    const done = (answer: PingAnswer) => {
      socket.destroy();
      resolve(answer);
    };
    // Cut short: what is not Redis may send anything, and the line goes into a message.
    const reply = (line: string) => done({ kind: 'reply', line: line.slice(0, 200) });
    socket.setTimeout(timeoutMs, () => done({ kind: 'silent' }));
    socket.once('error', () => done({ kind: connected ? 'closed' : 'refused' }));
    socket.once('close', () => done({ kind: 'closed' }));
    socket.once('connect', () => {
      connected = true;
      if (password !== undefined) socket.write(`*2\r\n$4\r\nAUTH\r\n$${Buffer.byteLength(password)}\r\n${password}\r\n`);
      socket.write('PING\r\n');
    });
    let received = '';
    socket.on('data', (data) => {
      received += data.toString();
      const lines = received.split('\r\n'); // the last one not ended yet
      if (password === undefined) reply(lines[0]!); // the first bytes tell: what is not Redis may never end a line
      else if (lines.length > 1 && lines[0]!.startsWith('-')) reply(lines[0]!); // AUTH refused
      else if (lines.length > 2) reply(lines[1]!);
    });
  });
}

/** Sends PING (after AUTH with `password`) and waits for +PONG; false on refusal, silence or anything else. */
export async function redisAnswers(host: string, port: number, timeoutMs = 1000, password?: string): Promise<boolean> {
  const answer = await ping(host, port, timeoutMs, password);
  return answer.kind === 'reply' && answer.line.startsWith('+PONG');
}

/** An answer as an error message names it. */
const said = (answer: PingAnswer) => (answer.kind === 'reply' ? JSON.stringify(answer.line) : answer.kind === 'silent' ? 'no answer' : 'closed, no reply');

/** A Redis that will answer PONG once it is done: loading its dataset, or running a long script. */
const busy = (answer: PingAnswer) => answer.kind === 'reply' && /^-(LOADING|BUSY)\b/.test(answer.line);

/**
 * How long silence is waited for: a Redis running a script answers nothing until its `lua-time-limit` (5 s), then
 * `-BUSY`. Silent for longer, what listens is not a Redis to use (DESIGN §2: nothing answers, a private one starts).
 */
const SILENT_WAIT_MS = 6_000;

/**
 * Whether `npm start`, `REDIS_URL` unset, uses the Redis at host:port (127.0.0.1:6379): yes when it answers PONG, no
 * when nothing listens there or what does is not Redis (no Redis reply to PING): then it runs on a private
 * redis-server, on a port of its own. A busy Redis is waited for, up to `BUSY_WAIT_MS`; one that answers with an
 * error (`-NOAUTH`) fails the start, naming it: an empty private server in its place would strand its jobs.
 */
export async function useLocalRedis(host: string, port: number, log: Logger, signal?: AbortSignal): Promise<boolean> {
  const url = `redis://${host}:${port}`;
  let answer = await ping(host, port);
  const started = Date.now();
  const waiting = (now: PingAnswer) => busy(now) || (now.kind === 'silent' && Date.now() - started < SILENT_WAIT_MS);
  if (waiting(answer)) log.info({ url, answer }, 'REDIS_URL is unset: waiting for the Redis there to answer PING');
  const deadline = started + BUSY_WAIT_MS;
  while (waiting(answer)) {
    if (Date.now() > deadline) {
      throw new RedisUnavailableError(`${url} has not answered PING for ${BUSY_WAIT_MS / 1000} s (${said(answer)}): start again once it does, or point REDIS_URL at a Redis.`);
    }
    answer = await unlessAborted(sleep(200).then(() => ping(host, port)), signal);
  }
  if (answer.kind === 'refused') return false;
  if (answer.kind === 'reply' && answer.line.startsWith('+PONG')) return true;
  if (answer.kind === 'reply' && answer.line.startsWith('-')) {
    const fix = /^-(NOAUTH|WRONGPASS)\b/.test(answer.line) ? `set REDIS_URL with its password (redis://:PASSWORD@${host}:${port})` : 'set REDIS_URL';
    throw new RedisUnavailableError(`REDIS_URL is unset and the Redis at ${url} answers PING with ${said(answer)}: ${fix}.`);
  }
  log.warn({ url, answer }, 'REDIS_URL is unset and what listens there is not Redis: using a private redis-server');
  return false;
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

/** Which server runs on a data directory (pid, port) and which processes use it: a later start finds it. */
const SERVER_FILE = 'kyozo-redis.json';
/** Held (with the holder's pid in it) while a process starts, joins or stops the server of the directory. */
const LOCK_FILE = 'kyozo-redis.lock';
const LOG_FILE = 'redis.log';
/** How long a start waits for another process's turn: more than a slow redis-server start takes (~30 s of polls). */
const LOCK_WAIT_MS = 60_000;
/** How long a Redis that runs but does not answer PONG yet (loading its dataset, a long script) is waited for. */
const BUSY_WAIT_MS = 60_000;

const INSTALL_HINT =
  'Install one (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis), ' +
  'run one (docker run -p 6379:6379 redis:7), or point REDIS_URL at yours.';

interface ServerRecord {
  pid: number;
  port: number;
  /** What it asks clients for (a server started by an older version asks for none). */
  password?: string;
  /** One pid per use (a file written before users were recorded has none). */
  users?: number[];
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** False when there is no such process. */
function signal(pid: number, name: NodeJS.Signals | 0): boolean {
  try {
    process.kill(pid, name);
    return true;
  } catch {
    return false;
  }
}

/**
 * A zombie counts as gone: it has exited, but a server whose starter exited first waits for an init that may never
 * reap it (some containers' pid 1), and `kill(pid, 0)` still finds it. Linux's /proc tells; elsewhere init reaps.
 */
function isAlive(pid: number): boolean {
  if (!signal(pid, 0)) return false;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return true;
  }
}

/** Whether `pid` runs and is a redis-server (where /proc tells: not an unrelated process that reuses the pid). */
function isRedisServer(pid: number): boolean {
  if (!isAlive(pid)) return false;
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'redis-server';
  } catch {
    return true;
  }
}

/** Stops process `pid` with SIGTERM and waits until it is gone (Redis rewrites nothing on exit with `--save ""`). */
async function terminate(pid: number): Promise<void> {
  if (!signal(pid, 'SIGTERM')) return;
  while (isAlive(pid)) await sleep(50);
}

/**
 * Takes the directory's lock, waiting while another live process holds it; a dead holder's lock is stale. So is one
 * naming this process: within it `withLock` takes turns, so it holds none here, and its pid is a dead holder's
 * reused (a container's pid 1 after a restart).
 */
async function lock(dir: string): Promise<void> {
  const file = path.join(dir, LOCK_FILE);
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    const taken = await writeFile(file, String(process.pid), { flag: 'wx' }).then(
      () => true,
      (error: NodeJS.ErrnoException) => {
        if (error.code === 'EEXIST') return false;
        throw error;
      },
    );
    if (taken) return;
    const holder = Number(await readFile(file, 'utf8').catch(() => '')); // 0 while its holder writes its pid
    if (holder > 0 && (holder === process.pid || !isAlive(holder))) {
      await unlink(file).catch(() => undefined); // stale: its holder died holding it
      continue;
    }
    if (Date.now() > deadline) {
      throw new RedisUnavailableError(`${file} has been held by process ${holder || 'unknown'} for over ${LOCK_WAIT_MS / 1000} s: stop it, or delete the file if no such process runs.`);
    }
    await sleep(50);
  }
}

/**
 * Runs `task` holding the directory's lock, one at a time in this process too; an exit on the way (a second Ctrl-C)
 * leaves no lock behind.
 */
function withLock<T>(dir: string, task: () => Promise<T>): Promise<T> {
  return withProcessMutex(`private-redis:${dir}`, async () => {
    await lock(dir);
    const unlock = () => removeFile(path.join(dir, LOCK_FILE));
    process.once('exit', unlock);
    try {
      return await task();
    } finally {
      process.off('exit', unlock);
      unlock();
    }
  });
}

/** Synchronous, like the other file steps below, so that they also work in an 'exit' handler. */
function readServer(dir: string): ServerRecord | undefined {
  try {
    return JSON.parse(readFileSync(path.join(dir, SERVER_FILE), 'utf8')) as ServerRecord;
  } catch {
    return undefined;
  }
}

/** The server's password is in it: its user's alone, also when an older version created it with the default mode. */
function writeServer(dir: string, record: ServerRecord): void {
  const file = openSync(path.join(dir, SERVER_FILE), 'w', 0o600);
  try {
    fchmodSync(file, 0o600); // the mode given applies only when the file is created
    writeFileSync(file, JSON.stringify(record));
  } finally {
    closeSync(file);
  }
}

/** What a private server's refusal of this process's AUTH (or of PING without it) means, by its error code. */
const AUTH_REFUSALS: Record<string, string> = {
  NOAUTH: 'asks for a password its record does not hold',
  WRONGPASS: 'refuses the password its record holds',
  ERR: 'asks for no password, and its record holds one',
};

/** The server's URL as logged: never with its password. */
const shownUrl = (port: number) => `redis://127.0.0.1:${port}`;

function removeFile(file: string): void {
  try {
    unlinkSync(file);
  } catch {
    // already gone
  }
}

/** A stopped server's file goes: a later start must not take an unrelated process reusing its pid for it. */
function forgetServer(dir: string): void {
  removeFile(path.join(dir, SERVER_FILE));
}

/**
 * Takes one use of this process off the server's users. The pids still using it (dead ones dropped): while there
 * are any it must keep running; with none its file goes and the caller stops it.
 */
function leave(dir: string): number[] {
  const record = readServer(dir);
  const users = record?.users ?? [];
  const mine = users.indexOf(process.pid);
  const using = users.filter((pid, index) => index !== mine && isAlive(pid));
  if (using.length > 0) writeServer(dir, { ...record!, users: using });
  else forgetServer(dir);
  return using;
}

/**
 * One use of a server by this process: stopping it (or however this process ends, short of a SIGKILL) stops the
 * server only when no other live process uses it, so a second `npm start` never stops the Redis of the first. Its
 * URL carries the server's password (base64url: nothing to escape).
 */
function use(dir: string, server: { pid: number; port: number; password?: string; stop(): Promise<void> }, log: Logger): PrivateRedis {
  const onExit = () => {
    if (leave(dir).length === 0) signal(server.pid, 'SIGTERM');
  };
  process.once('exit', onExit);
  return {
    url: server.password === undefined ? shownUrl(server.port) : `redis://:${server.password}@127.0.0.1:${server.port}`,
    stop: () =>
      withLock(dir, async () => {
        process.off('exit', onExit);
        const using = leave(dir);
        if (using.length > 0) log.info({ url: shownUrl(server.port), users: using }, 'left the private redis-server running for the other processes using it');
        else await server.stop();
      }),
  };
}

/**
 * A server already running on this data directory, started by a process that still runs (two `npm start` on one
 * directory) or by one killed before it could stop it: used rather than started twice over the same AOF files.
 */
async function joinRunning(dir: string, log: Logger): Promise<PrivateRedis | undefined> {
  const known = readServer(dir);
  if (known === undefined || !isRedisServer(known.pid)) {
    forgetServer(dir); // stale: no one's server to keep
    return undefined;
  }
  // Its process runs: a server that does not answer now is busy (a long script, loading its AOF), not gone.
  const deadline = Date.now() + BUSY_WAIT_MS;
  for (;;) {
    const answer = await ping('127.0.0.1', known.port, 500, known.password);
    if (answer.kind === 'reply' && answer.line.startsWith('+PONG')) break;
    const refusal = answer.kind === 'reply' ? AUTH_REFUSALS[/^-([A-Z]+)\b/.exec(answer.line)?.[1] ?? ''] : undefined;
    if (refusal !== undefined) {
      // Not busy: it will never answer this process (started by another version of this service, or its record
      // replaced). Its reply is not quoted: an `-ERR` to AUTH repeats the password.
      throw new RedisUnavailableError(
        `the private redis-server of ${dir} (pid ${known.pid}, port ${known.port}) ${refusal} (${SERVER_FILE}): ` +
          `stop it (kill ${known.pid}) and start again, or point REDIS_URL at a Redis.`,
      );
    }
    if (!isRedisServer(known.pid)) {
      forgetServer(dir);
      return undefined;
    }
    if (Date.now() > deadline) {
      throw new RedisUnavailableError(
        `the private redis-server of ${dir} (pid ${known.pid}, port ${known.port}) runs but has not answered for ${BUSY_WAIT_MS / 1000} s: stop it, or point REDIS_URL at a Redis.`,
      );
    }
    await sleep(200);
  }
  const users = (known.users ?? []).filter(isAlive);
  const { pid, port, password } = known;
  writeServer(dir, { pid, port, password, users: [...users, process.pid] });
  const url = shownUrl(port);
  const others = users.filter((user) => user !== process.pid);
  if (others.length > 0) log.info({ url, dir, pid, users: others }, 'using the private redis-server the running processes on this directory use');
  else log.info({ url, dir, pid }, 'using the private redis-server an earlier run left running');
  return use(dir, { pid, port, password, stop: () => terminate(pid) }, log);
}

/** The last lines redis-server logged, for an error message. */
async function logTail(dir: string): Promise<string> {
  const text = await readFile(path.join(dir, LOG_FILE), 'utf8').catch(() => '');
  return text.trim().split('\n').slice(-3).join(' | ');
}

async function startServer(dir: string, log: Logger): Promise<PrivateRedis> {
  const port = await freePort();
  const args = ['--bind', '127.0.0.1', '--port', String(port), '--dir', dir, '--appendonly', 'yes', '--maxmemory-policy', 'noeviction', '--save', ''];
  const password = randomBytes(24).toString('base64url');
  // Its own process group: a Ctrl-C in the terminal reaches this process, which stops Redis last, after the jobs.
  // `-`: it reads a config from stdin (to its end) first, the password's way in: its command line is seen by all (`ps`).
  const child: ChildProcess = spawn('redis-server', ['-', ...args, '--logfile', path.join(dir, LOG_FILE)], { stdio: ['pipe', 'ignore', 'ignore'], detached: true });
  child.stdin!.once('error', () => undefined); // one that exits before reading it (EPIPE) fails the start below
  child.stdin!.end(`requirepass ${password}\n`);
  // An exit before it answers (a signal during the start) takes it along: it is no one's yet.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  const outcome = await new Promise<'started' | 'missing' | 'failed'>((resolve) => {
    child.once('error', (error: NodeJS.ErrnoException) => resolve(error.code === 'ENOENT' ? 'missing' : 'failed'));
    const poll = async (tries: number): Promise<void> => {
      if (child.exitCode !== null) return resolve('failed');
      if (await redisAnswers('127.0.0.1', port, 200, password)) return resolve('started');
      if (tries <= 0) return resolve('failed');
      setTimeout(() => void poll(tries - 1), 100);
    };
    void poll(100);
  });
  process.off('exit', killOnExit);
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
  writeServer(dir, { pid: child.pid!, port, password, users: [process.pid] });
  log.info({ url: shownUrl(port), dir }, 'started a private redis-server (REDIS_URL is unset and no Redis listens on 127.0.0.1:6379)');
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    });
  };
  return use(dir, { pid: child.pid!, port, password, stop }, log);
}

export async function startPrivateRedis(rootDir: string, log: Logger): Promise<PrivateRedis> {
  // Its AOF holds job bodies and the URL-signing secret: the directory is the service's user's alone, made so or not.
  await mkdir(path.join(rootDir, 'redis'), { recursive: true, mode: 0o700 });
  await chmod(path.join(rootDir, 'redis'), 0o700);
  // Its real path: two starts in this process that name it differently (a symlink) still take turns (`withLock`).
  const dir = await realpath(path.join(rootDir, 'redis'));
  // One start at a time per directory: two reading "no server" at once would start two on the same AOF files.
  return withLock(dir, async () => (await joinRunning(dir, log)) ?? (await startServer(dir, log)));
}
