/**
 * `npm start`'s entry as a child process on a free port, driven over real HTTP: put, wait, get, versions, restore,
 * delete, and SSE receiving the events in order.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/embedded-redis.js';
import { deleteKeys, connectRedis, TEST_REDIS_URL, uniquePrefix } from '../support/redis.js';

const sha256 = (content: string) => createHash('sha256').update(content).digest('hex');
const root = path.resolve(import.meta.dirname, '../..');

let child: ChildProcess;
let base: string;
let dataDir: string;
const prefix = uniquePrefix('e2e');
let output = '';


function rawStatus(pathAsWritten: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const { hostname, port } = new URL(base);
    const request = http.request({ hostname, port, path: pathAsWritten }, (response) => {
      response.resume();
      resolve(response.statusCode!);
    });
    request.on('error', reject);
    request.end();
  });
}

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(os.tmpdir(), 'kyozo-e2e-'));
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: root,
    env: { ...process.env, PORT: String(port), REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: prefix, STORAGE_ROOT_DIR: dataDir, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.on('data', (chunk) => (output += chunk));
  child.stderr!.on('data', (chunk) => (output += chunk));
  for (let i = 0; i < 300; i++) {
    if (child.exitCode !== null) throw new Error(`npm start exited early:\n${output}`);
    if (await fetch(`${base}/health`).then((r) => r.ok, () => false)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`npm start did not answer on ${base}:\n${output}`);
}, 60_000);

afterAll(async () => {
  if (child && child.exitCode === null) {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }
  const redis = await connectRedis();
  await deleteKeys(redis, prefix);
  redis.disconnect();
  await rm(dataDir, { recursive: true, force: true });
});

describe('npm start, over real HTTP', () => {
  it('put, get, versions, restore, delete — and SSE sees every event in order', async () => {
    const abort = new AbortController();
    const sse = await fetch(`${base}/v1/events`, { signal: abort.signal });
    expect(sse.status).toBe(200);
    const seen: string[] = [];
    const reading = (async () => {
      const decoder = new TextDecoder();
      let buffer = '';
      for await (const chunk of sse.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        for (const match of buffer.matchAll(/^event: (.+)$/gm)) seen.push(match[1]!);
        buffer = buffer.slice(buffer.lastIndexOf('\n\n') + 2);
        if (seen.length >= 5) return;
      }
    })().catch(() => undefined);

    const object = `${base}/v1/stores/default/objects/e2e/note.txt`;
    const put = await fetch(`${object}?wait=true`, { method: 'PUT', body: 'first', headers: { 'Content-Type': 'text/plain' } });
    expect(put.status).toBe(200);
    expect(await put.json()).toMatchObject({ etag: sha256('first') });

    const get = await fetch(object);
    expect(await get.text()).toBe('first');
    expect(get.headers.get('etag')).toBe(`"${sha256('first')}"`);

    const v1 = (await (await fetch(`${object}/versions?wait=true`, { method: 'POST', body: 'one', headers: { 'X-Version-Message': 'one' } })).json()) as { versionId: string };
    await fetch(`${object}/versions?wait=true`, { method: 'POST', body: 'two', headers: { 'X-Version-Message': 'two' } });
    const versions = (await (await fetch(`${object}/versions`)).json()) as { items: { message: string }[] };
    expect(versions.items.map((version) => version.message)).toEqual(['two', 'one']);

    const restore = await fetch(`${object}/versions/${v1.versionId}/restore?wait=true`, { method: 'POST' });
    expect(restore.status).toBe(200);
    expect(await (await fetch(object)).text()).toBe('one');

    expect((await fetch(`${object}?wait=true`, { method: 'DELETE' })).status).toBe(200);
    expect((await fetch(object)).status).toBe(404);

    // fetch would resolve the dot segment before sending; http.request sends the path as written.
    expect(await rawStatus('/v1/stores/default/objects/e2e/%2e%2e/escape')).toBe(400);
    expect(await rawStatus('/v1/stores/default/objects/e2e/../escape')).toBe(400);

    await Promise.race([reading, new Promise((resolve) => setTimeout(resolve, 5000))]);
    abort.abort();
    expect(seen).toEqual(['object.written', 'version.created', 'version.created', 'version.restored', 'object.deleted']);
  });
});
