/**
 * Promise 2: no torn objects. 8 MiB writes go to a disk store (staged, then copied by the worker with a temp file,
 * fsync and rename) while the worker is SIGKILLed at random moments. Throughout, a reader checks that every object
 * it can read is complete and matches its ETag, and that listings show only real keys; afterwards every key holds
 * one of the contents written to it.
 */
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_REDIS_URL, uniquePrefix } from '../support/redis.js';
import {
  reportFigures,
  scaled,
  sleep,
  startDeployment,
  waitUntil,
  type Deployment,
  type QueueProbe,
  type ServiceProcess,
} from './fixtures/processes.js';

const MIB = 1024 * 1024;
const OBJECT_BYTES = 8 * MIB;
const KEYS = Array.from({ length: 6 }, (_, i) => `big/object-${i}.bin`);
const WRITES = scaled(24, 100);
const KILLS = scaled(4, 12);
const prefix = uniquePrefix('rel-torn');

let deployment: Deployment | undefined;
let worker: ServiceProcess;
let probe: QueueProbe;
let root: string;
let base: string;

beforeAll(async () => {
  deployment = await startDeployment({
    label: 'torn-root',
    redisUrl: TEST_REDIS_URL,
    prefix,
    env: { STORES: 'files:disk', WORKER_CONCURRENCY: '4' },
    // Every kill may catch the same job, so it may stall at each of them: more than the production JOB_ATTEMPTS.
    workerEnv: { KYOZO_TEST_MAX_STALLED_COUNT: String(KILLS + 1) },
  });
  ({ worker, probe, root, base } = deployment);
}, 120_000);

afterAll(async () => {
  await deployment?.close();
});

const sha256 = (content: Buffer) => createHash('sha256').update(content).digest('hex');

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((entry) => entry.isFile()).map((entry) => path.join(entry.parentPath, entry.name));
}

describe('8 MiB writes with the worker killed at random moments', () => {
  it('every readable object is complete and matches its etag; listings show no temp file', async () => {
    const written = new Map<string, Set<string>>(KEYS.map((key) => [key, new Set<string>()]));
    const torn: string[] = [];
    const strayListed: string[] = [];
    let reads = 0;
    let listings = 0;
    let done = false;
    let chaosDone = false;
    let writes = 0;

    // Every key exists before the crashes start, so readers race against replacements, not only first writes.
    for (const key of KEYS) {
      const content = randomBytes(OBJECT_BYTES);
      written.get(key)!.add(sha256(content));
      const response = await fetch(`${base}/v1/stores/files/objects/${key}?wait=true`, { method: 'PUT', body: content });
      expect(response.status).toBe(200);
      await response.body?.cancel();
      writes++;
    }

    // Writes go on until the chaos is over, so every kill falls among them.
    const writer = (async () => {
      for (let i = 0; i < WRITES || !chaosDone; i++) {
        const key = KEYS[i % KEYS.length]!;
        const content = randomBytes(OBJECT_BYTES);
        written.get(key)!.add(sha256(content)); // before sending: a reader may see it as soon as the job runs
        const response = await fetch(`${base}/v1/stores/files/objects/${key}`, { method: 'PUT', body: content });
        expect(response.status).toBe(202);
        await response.body?.cancel();
        writes++;
      }
    })();

    const reader = (async () => {
      while (!done) {
        const key = KEYS[randomInt(KEYS.length)]!;
        const response = await fetch(`${base}/v1/stores/files/objects/${key}`);
        // Every key was written before the crashes: a replacement in progress must never make it unreadable.
        expect(response.status, key).toBe(200);
        const content = Buffer.from(await response.arrayBuffer());
        const etag = sha256(content);
        reads++;
        if (content.length !== OBJECT_BYTES || response.headers.get('etag') !== `"${etag}"` || !written.get(key)!.has(etag)) {
          torn.push(`${key}: ${content.length} bytes, etag header ${response.headers.get('etag')}, content ${etag}`);
        }
        const list = (await (await fetch(`${base}/v1/stores/files/objects?limit=1000`)).json()) as { items: { key: string; size: number }[] };
        listings++;
        for (const item of list.items) if (!written.has(item.key) || item.size !== OBJECT_BYTES) strayListed.push(`${item.key} (${item.size})`);
      }
    })();

    const faults: string[] = [];
    const chaos = (async () => {
      for (let k = 0; k < KILLS; k++) {
        // A random moment inside a job: once the worker holds one, somewhere in its staging read, 8 MiB copy,
        // fsync, rename or completion.
        const counts = await waitUntil(async () => {
          const now = await probe.counts();
          return now.active > 0 ? now : undefined;
        }, { timeoutMs: 30_000, intervalMs: 5, what: 'an active job' });
        await sleep(randomInt(0, 400));
        await worker.kill();
        faults.push(`worker SIGKILL with ${counts.active} active, ${counts.completed} completed`);
        await sleep(randomInt(50, 500));
        await worker.start();
      }
      chaosDone = true;
    })();

    await Promise.all([writer, chaos]);
    const counts = await probe.drained({ timeoutMs: scaled(120_000, 600_000) });
    done = true;
    await reader;

    expect(torn).toEqual([]);
    expect(strayListed).toEqual([]);
    expect(await probe.failures()).toEqual([]);
    expect(counts.completed).toBe(writes);
    for (const key of KEYS) {
      const response = await fetch(`${base}/v1/stores/files/objects/${key}`);
      const content = Buffer.from(await response.arrayBuffer());
      expect(response.status, key).toBe(200);
      expect(content.length, key).toBe(OBJECT_BYTES);
      expect(written.get(key)!.has(sha256(content)), `${key} holds one of the contents written to it`).toBe(true);
    }

    // Temp files a crash left behind are invisible (checked above); count them for the report.
    const files = await filesUnder(path.join(root, 'files'));
    reportFigures('2 no torn objects', {
      writes,
      objectBytes: OBJECT_BYTES,
      workerKills: faults.length,
      faults,
      readsChecked: reads,
      listingsChecked: listings,
      tornSeen: torn.length,
      tempFilesLeftOnDisk: files.filter((file) => path.basename(file).startsWith('.tmp-')).length,
      stagedBlobsLeft: (await filesUnder(path.join(root, '.staging'))).length,
    });
  }, scaled(240_000, 900_000));
});
