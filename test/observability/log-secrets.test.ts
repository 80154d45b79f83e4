/**
 * No secret reaches a log line, at any level, of the web process and the worker process run as the Procfile runs
 * them (LOG_LEVEL=trace, stdout and stderr): bearer tokens (right and wrong), the board's basic password, the
 * URL-signing secret and signatures of signed URLs, S3 presigned URL signatures, the Redis password (also while
 * Redis refuses it), webhook URLs with a secret in their path or query, WEBHOOK_SECRET, AWS credentials. Also the
 * /ready body (with and without a token) during those failures.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/embedded-redis.js';
import { redisCli, redisServerUnavailableReason, startRedisServer, type RedisServer } from '../cluster/redis-server.js';
import { uniquePrefix } from '../support/redis.js';
import { s3ServiceEnv, startS3, type S3TestEndpoint } from '../support/s3.js';
import { sleep } from './support.js';

const REPO = path.resolve(import.meta.dirname, '../..');
const REDIS_PW = 'redisPw-Sekr1t-7731';
const NEW_REDIS_PW = 'redisPw-Rotated-9902';
const TOKEN = 'apiToken-Sekr1t-0123456789';
const WRONG_TOKEN = 'wrongToken-Sekr1t-5555555';
const BOARD_WRONG = 'boardPw-Sekr1t-4444444';
const SIGNING = 'signingSecret-Sekr1t-8888';
const HOOK_SECRET = 'whsec-Sekr1t-3333';
const HOOK_PATH = 'hookPath-Sekr1t-2222';
const HOOK_QUERY = 'hookQuery-Sekr1t-1111';
const DEAD_HOOK_PATH = 'deadHookPath-Sekr1t-6666';

const noRedis = redisServerUnavailableReason();

interface Proc {
  lines: string[];
  child: ChildProcess;
  stop(): Promise<void>;
}

function run(entry: string, env: Record<string, string>, ready: (lines: string[]) => boolean | Promise<boolean>): Promise<Proc> {
  const lines: string[] = [];
  const child = spawn(process.execPath, ['--import', 'tsx', entry], { cwd: REPO, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  createInterface({ input: child.stdout! }).on('line', (line) => lines.push(line));
  createInterface({ input: child.stderr! }).on('line', (line) => lines.push(`[stderr] ${line}`));
  const stop = () =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      const kill = setTimeout(() => child.kill('SIGKILL'), 15_000);
      child.once('exit', () => {
        clearTimeout(kill);
        resolve();
      });
      child.kill('SIGTERM');
    });
  return (async () => {
    const deadline = Date.now() + 60_000;
    while (!(await ready(lines))) {
      if (child.exitCode !== null) throw new Error(`${entry} exited ${child.exitCode}:\n${lines.join('\n')}`);
      if (Date.now() > deadline) throw new Error(`${entry} not ready:\n${lines.slice(-20).join('\n')}`);
      await sleep(100);
    }
    return { lines, child, stop };
  })();
}

let redis: RedisServer;
let s3: S3TestEndpoint;
let receiver: Server;
let received = 0;
let web: Proc;
let worker: Proc;
let base: string;
let root: string;
let metricsUrl: string;
const secretsSeen: string[] = [];
const responses: { id: string | null; status: number; what: string }[] = [];
const readyBodies: string[] = [];

beforeAll(async () => {
  if (noRedis) return;
  redis = await startRedisServer();
  await redisCli(redis.port, 'CONFIG', 'SET', 'requirepass', REDIS_PW);
  s3 = await startS3();
  const bucket = await s3.createBucket();
  receiver = createServer((request, response) => {
    received++;
    request.resume();
    response.writeHead(500).end('nope');
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  const hookPort = (receiver.address() as AddressInfo).port;
  root = await mkdtemp(path.join(os.tmpdir(), 'kyozo-obs-secrets-'));
  const port = await freePort();
  const metricsPort = await freePort();
  base = `http://127.0.0.1:${port}`;
  metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
  const env = {
    LOG_LEVEL: 'trace',
    REDIS_URL: `redis://default:${REDIS_PW}@127.0.0.1:${redis.port}`,
    QUEUE_PREFIX: uniquePrefix('obs-secrets'),
    STORAGE_ROOT_DIR: root,
    PORT: String(port),
    HOST: '127.0.0.1',
    API_TOKENS: TOKEN,
    URL_SIGNING_SECRET: SIGNING,
    WEBHOOK_URLS: `http://127.0.0.1:${hookPort}/hooks/${HOOK_PATH}?token=${HOOK_QUERY},http://127.0.0.1:9/dead/${DEAD_HOOK_PATH}`,
    WEBHOOK_SECRET: HOOK_SECRET,
    STORES: 'files:disk,media:s3',
    S3_VERSIONING: 'explicit',
    DISK_FSYNC: 'false',
    JOB_ATTEMPTS: '2',
    WORKER_METRICS_PORT: String(metricsPort),
    ...s3ServiceEnv(s3, bucket),
  };
  web = await run('src/api/main.ts', env, async () => (await fetch(`${base}/health`).then((r) => r.ok, () => false)));
  worker = await run('src/workers/main.ts', env, (lines) => lines.some((line) => line.includes('worker ready')));
}, 180_000);

afterAll(async () => {
  await web?.stop();
  await worker?.stop();
  if (receiver) await new Promise((resolve) => receiver.close(resolve));
  await s3?.close();
  await redis?.stop();
  if (root) await rm(root, { recursive: true, force: true });
});

async function call(what: string, url: string, init: RequestInit = {}): Promise<Response> {
  const response = await fetch(url, { ...init, signal: AbortSignal.timeout(30_000) });
  responses.push({ id: response.headers.get('x-request-id'), status: response.status, what });
  return response;
}

describe.skipIf(noRedis !== undefined)('secrets in logs and /ready', () => {
  it('a day of operations and failures logs none of them', async () => {
    const auth = { Authorization: `Bearer ${TOKEN}` };
    // Bearer tokens, right and wrong; the board's basic auth, right and wrong.
    await call('stores', `${base}/v1/stores`, { headers: auth });
    await call('wrong token', `${base}/v1/stores`, { headers: { Authorization: `Bearer ${WRONG_TOKEN}` } });
    await call('board', `${base}/admin/queues`, { headers: { Authorization: `Basic ${Buffer.from(`ops:${TOKEN}`).toString('base64')}` } });
    await call('board wrong', `${base}/admin/queues`, { headers: { Authorization: `Basic ${Buffer.from(`ops:${BOARD_WRONG}`).toString('base64')}` } });
    // Writes that raise events (webhooks to a URL answering 500 and to one that refuses).
    expect((await call('put files', `${base}/v1/stores/files/objects/doc/a?wait=true`, { method: 'PUT', body: 'x', headers: auth })).status).toBe(200);
    expect((await call('put media', `${base}/v1/stores/media/objects/doc/b?wait=true`, { method: 'PUT', body: 'y', headers: auth })).status).toBe(200);
    // Signed URLs (HMAC) and S3 presigned URLs, used, tampered, and for a missing key.
    const signed = (await (await call('sign', `${base}/v1/stores/files/objects/doc/a/url?method=GET&expires=600`, { headers: auth })).json()) as { url: string };
    const signature = new URL(signed.url).searchParams.get('signature')!;
    secretsSeen.push(signature);
    expect((await call('signed get', signed.url)).status).toBe(200);
    expect((await call('signed tampered', signed.url.replace('doc/a', 'doc/zz'))).status).toBe(403);
    const signedPut = (await (await call('sign put', `${base}/v1/stores/files/objects/doc/c/url?method=PUT&expires=600`, { headers: auth })).json()) as { url: string };
    secretsSeen.push(new URL(signedPut.url).searchParams.get('signature')!);
    await call('signed put', signedPut.url, { method: 'PUT', body: 'z' });
    const presigned = (await (await call('presign', `${base}/v1/stores/media/objects/doc/b/url?method=GET&expires=600`, { headers: auth })).json()) as { url: string };
    const amzSignature = new URL(presigned.url).searchParams.get('X-Amz-Signature');
    if (amzSignature) secretsSeen.push(amzSignature);
    // Let webhook deliveries fail a few times.
    for (let i = 0; i < 100 && received < 2; i++) await sleep(100);
    await sleep(3_000);

    // S3 down: reads 503 (error logs), a write job retried by the worker.
    await s3.stop();
    try {
      await call('media read down', `${base}/v1/stores/media/objects/doc/b`, { headers: auth });
      await call('media put down', `${base}/v1/stores/media/objects/doc/d`, { method: 'PUT', body: 'w', headers: auth });
      const ready = await call('ready s3 down', `${base}/ready`, { headers: auth });
      readyBodies.push(await ready.text());
      await sleep(3_000);
    } finally {
      await s3.start();
    }

    // Redis changes its password under the running processes: every reconnect is refused.
    await redisCli(redis.port, '-a', REDIS_PW, '--no-auth-warning', 'CONFIG', 'SET', 'requirepass', NEW_REDIS_PW);
    await redisCli(redis.port, '-a', NEW_REDIS_PW, '--no-auth-warning', 'CLIENT', 'KILL', 'TYPE', 'normal');
    await sleep(3_000);
    const ready = await call('ready redis refuses', `${base}/ready`, { headers: auth });
    expect(ready.status).toBe(503);
    readyBodies.push(await ready.text());
    const anonymous = await call('ready redis refuses, no token', `${base}/ready`);
    readyBodies.push(await anonymous.text());
    await call('put redis refuses', `${base}/v1/stores/files/objects/doc/e`, { method: 'PUT', body: 'v', headers: auth });
    await call('board api redis refuses', `${base}/admin/queues/api/queues`, { headers: { Authorization: `Basic ${Buffer.from(`ops:${TOKEN}`).toString('base64')}` } });
    await fetch(metricsUrl).then((r) => r.text());
    await redisCli(redis.port, '-a', NEW_REDIS_PW, '--no-auth-warning', 'CONFIG', 'SET', 'requirepass', REDIS_PW);
    await sleep(2_000);
    await web.stop();
    await worker.stop();

    const all = [...web.lines.map((l) => `web ${l}`), ...worker.lines.map((l) => `worker ${l}`)];
    const secrets = {
      REDIS_PW,
      NEW_REDIS_PW,
      TOKEN,
      WRONG_TOKEN,
      BOARD_WRONG,
      SIGNING,
      HOOK_SECRET,
      HOOK_PATH,
      HOOK_QUERY,
      DEAD_HOOK_PATH,
      AWS_SECRET: s3.credentials.secretAccessKey,
      ...Object.fromEntries(secretsSeen.map((s, i) => [`signature${i}`, s])),
    };
    const leaks = Object.entries(secrets).flatMap(([name, secret]) => all.filter((line) => line.includes(secret)).map((line) => `${name}: ${line.slice(0, 400)}`));
    console.log(`${all.length} log lines; ${received} webhook deliveries received`);
    expect(all.length).toBeGreaterThan(20);
    expect(received).toBeGreaterThan(0);
    expect(leaks).toEqual([]);
    const bodyLeaks = Object.entries(secrets).filter(([, secret]) => readyBodies.some((body) => body.includes(secret)));
    expect(bodyLeaks).toEqual([]);

    // Every answer's id is on a `request` line of the web process with the answer's status.
    const parsed = web.lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    for (const { id, status, what } of responses) {
      expect(parsed.find((l) => l.msg === 'request' && l.requestId === id)?.status, what).toBe(status);
    }
    expect(parsed.filter((l) => l.msg === 'request failed' && l.requestId === undefined).map((l) => JSON.stringify(l).slice(0, 300))).toEqual([]);
  }, 180_000);
});
