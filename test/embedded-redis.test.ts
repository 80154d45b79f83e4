/**
 * The private redis-server of `npm start` (used when REDIS_URL is unset and nothing answers on 6379), started here
 * directly on temp directories: how it starts, fails, stops, and is found again.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { redisAnswers, startPrivateRedis, type PrivateRedis } from '../src/embedded-redis.js';
import { redisServerUnavailableReason } from './cluster/redis-server.js';
import { quietLog } from './support/service.js';

const unavailable = redisServerUnavailableReason();
if (unavailable !== undefined) console.log(`private redis-server tests skipped: ${unavailable}`);

const dirs: string[] = [];
const started: PrivateRedis[] = [];

async function root(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kyozo-private-redis-'));
  dirs.push(dir);
  return dir;
}

const portOf = (url: string) => Number(new URL(url).port);
const serverFile = async (dir: string) => JSON.parse(await readFile(path.join(dir, 'redis', 'kyozo-redis.json'), 'utf8')) as { pid: number; port: number };
const processGroup = async (pid: number) => Number((await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ')[2]);

afterEach(async () => {
  for (const redis of started.splice(0)) await redis.stop();
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

describe.skipIf(unavailable !== undefined)('private redis-server', () => {
  it('starts in a process group of its own (a Ctrl-C reaches only this process), and stops', async () => {
    const dir = await root();
    const redis = await startPrivateRedis(dir, quietLog);
    started.push(redis);
    expect(await redisAnswers('127.0.0.1', portOf(redis.url))).toBe(true);
    const { pid } = await serverFile(dir);
    expect(await processGroup(pid)).not.toBe(await processGroup(process.pid));
    await redis.stop();
    expect(await redisAnswers('127.0.0.1', portOf(redis.url))).toBe(false);
    await expect(serverFile(dir)).rejects.toThrow(); // a later start cannot take a reused pid for it
  });

  it('uses a server an earlier run left running on the same directory rather than starting a second one', async () => {
    const dir = await root();
    const first = await startPrivateRedis(dir, quietLog);
    started.push(first);
    const again = await startPrivateRedis(dir, quietLog);
    started.push(again);
    expect(again.url).toBe(first.url);
    await again.stop();
    expect(await redisAnswers('127.0.0.1', portOf(first.url))).toBe(false);
  });

  it('says what redis-server logged when it cannot start on the data directory', async () => {
    const dir = await root();
    await mkdir(path.join(dir, 'redis', 'appendonlydir'), { recursive: true });
    await writeFile(path.join(dir, 'redis', 'appendonlydir', 'appendonly.aof.manifest'), 'garbage\n');
    await expect(startPrivateRedis(dir, quietLog)).rejects.toThrow(/did not start.*AOF manifest/);
  });
});
