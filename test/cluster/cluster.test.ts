/**
 * The service on a Redis Cluster (DESIGN §10): a 3-node cluster started from `redis-server` on loopback, the API,
 * queues, workers and events bus built from `REDIS_CLUSTER_NODES`, write/version/restore/delete jobs driven
 * through the app. Every BullMQ and bus key of a hash-tagged prefix must land on one slot, so no command or
 * script ever spans slots (CROSSSLOT). Skipped, saying why, when `redis-server` is not installed.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { Cluster } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/api/app.js';
import { ApiMetrics } from '../../src/metrics.js';
import { startWebServices, type WebServices } from '../../src/api/services.js';
import { loadConfig, type Config } from '../../src/config.js';
import { createStagingProvider } from '../../src/jobs/staging.js';
import { createStores } from '../../src/providers/index.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { closeRedis, createRedis, whenReady } from '../../src/redis.js';
import { startWorkerProcess, type WorkerProcess } from '../../src/workers/process.js';
import { uniquePrefix } from '../support/redis.js';
import { startRedisCluster, type RedisCluster } from './redis-cluster.js';
import { redisServerUnavailableReason } from './redis-server.js';

const unavailable = redisServerUnavailableReason();
if (unavailable !== undefined) console.warn(`test/cluster: skipped: ${unavailable} (install redis-server to run the Redis Cluster test)`);

const sha256 = (content: Uint8Array | string) => createHash('sha256').update(content).digest('hex');

/** Every log line of the service, to look for errors no request would show (a worker's or a connection's). */
const logLines: string[] = [];
const log = pino(
  { level: 'info' },
  new Writable({
    write(chunk: Buffer, _encoding, done) {
      logLines.push(chunk.toString('utf8'));
      done();
    },
  }),
);

describe.skipIf(unavailable !== undefined)('Redis Cluster', () => {
  let cluster: RedisCluster;
  let config: Config;
  let root: string;
  let stores: Map<string, StorageProvider>;
  let stagingProvider: StorageProvider;
  let worker: WorkerProcess;
  let web: WebServices;
  let app: ReturnType<typeof createApp>;
  const objectPath = (store: string, key: string) => `/v1/stores/${store}/objects/${key}`;

  beforeAll(async () => {
    cluster = await startRedisCluster(3);
    root = await mkdtemp(path.join(os.tmpdir(), 'kyozo-cluster-service-'));
    config = loadConfig({
      REDIS_CLUSTER_NODES: cluster.nodes,
      QUEUE_PREFIX: uniquePrefix('cluster'),
      STORAGE_ROOT_DIR: root,
      STORES: 'files:disk,mem:ram',
      DISK_FSYNC: 'false',
      STAGING_INLINE_MAX: '4096',
      WAIT_TIMEOUT_MS: '20000',
      JOB_ATTEMPTS: '2',
      WORKER_CONCURRENCY: '8',
    });
    const metrics = new ApiMetrics();
    stores = await createStores(config, { log, observe: (store, observation) => metrics.observeProvider(store, observation) });
    stagingProvider = await createStagingProvider(config);
    worker = await startWorkerProcess({ config, log, stores, stagingProvider });
    web = await startWebServices({ config, log, stores, stagingProvider, metrics });
    app = createApp(web.deps);
  });

  afterAll(async () => {
    await web?.close();
    await worker?.shutdown(); // closes the stores and staging it was given
    await cluster?.stop();
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('the service connects through an ioredis Cluster', () => {
    expect(web.deps.redis).toBeInstanceOf(Cluster);
  });

  it('runs concurrent write jobs, inline and staged, and every object is present with its content', async () => {
    const bodies = Array.from({ length: 60 }, (_, i) => (i % 3 === 0 ? randomBytes(16 * 1024 + i) : Buffer.from(`small object ${i}`)));
    const jobIds = await Promise.all(
      bodies.map(async (body, i) => {
        const response = await app.request(objectPath(i % 2 === 0 ? 'files' : 'mem', `many/${String(i).padStart(3, '0')}`), { method: 'PUT', body });
        expect(response.status, await response.clone().text()).toBe(202);
        return ((await response.json()) as { jobId: string }).jobId;
      }),
    );
    const statuses = [];
    for (const jobId of jobIds) statuses.push(await web.deps.waiter.wait(jobId, 20_000));
    expect(statuses.map((status) => status?.state)).toEqual(jobIds.map(() => 'completed'));

    for (const store of ['files', 'mem']) {
      const { items } = await stores.get(store)!.list({ prefix: 'many/' });
      expect(items).toHaveLength(30);
      for (const info of items) expect(info.etag).toBe(sha256(bodies[Number(info.key.slice('many/'.length))]!));
    }
    expect((await stagingProvider.list()).items).toEqual([]);
  });

  it('version, restore and delete jobs complete and emit their events in order', async () => {
    const key = objectPath('files', 'doc/history.txt');
    const first = (await (
      await app.request(`${key}/versions?wait=true`, { method: 'POST', body: 'first', headers: { 'X-Version-Message': 'one' } })
    ).json()) as { versionId: string };
    const second = await app.request(`${key}/versions?wait=true`, { method: 'POST', body: 'second', headers: { 'X-Version-Message': 'two' } });
    expect(second.status).toBe(200);
    const restored = await app.request(`${key}/versions/${first.versionId}/restore?wait=true`, { method: 'POST' });
    expect(restored.status, await restored.clone().text()).toBe(200);
    expect(await (await app.request(key)).text()).toBe('first');
    expect((await app.request(`${key}?wait=true`, { method: 'DELETE' })).status).toBe(200);
    expect((await app.request(key)).status).toBe(404);

    const events = (await web.deps.bus.readSince(undefined, '*', 1000)).filter((event) => event.key === 'doc/history.txt');
    expect(events.map((event) => event.type)).toEqual(['version.created', 'version.created', 'version.restored', 'object.deleted']);
  });

  it('every key of the hash-tagged prefix lives on the one node that owns its slot', async () => {
    const probe = createRedis({ redis: { url: 'redis://127.0.0.1:0', explicit: true, clusterNodes: config.redis.clusterNodes } }, 'producer');
    await whenReady(probe);
    try {
      const cluster = probe as import('ioredis').Cluster;
      const perNode = await Promise.all(
        cluster.nodes('master').map(async (node) => {
          const keys: string[] = [];
          let cursor = '0';
          do {
            const [next, found] = await node.scan(cursor, 'MATCH', `${config.queuePrefix.replace(/[{}]/g, (c) => `\\${c}`)}*`, 'COUNT', 1000);
            cursor = next;
            keys.push(...found);
          } while (cursor !== '0');
          return keys;
        }),
      );
      const holding = perNode.filter((keys) => keys.length > 0);
      expect(holding).toHaveLength(1);
      expect(holding[0]!.some((key) => key.endsWith(':events'))).toBe(true);
      expect(holding[0]!.some((key) => key.includes(':objects:'))).toBe(true);
      const slots = new Set(await Promise.all(holding[0]!.slice(0, 50).map((key) => cluster.cluster('KEYSLOT', key))));
      expect(slots.size).toBe(1);
    } finally {
      await closeRedis(probe);
    }
  });

  it('no job failed and nothing logged a CROSSSLOT or any other error', async () => {
    const counts = await web.deps.queues.queue('objects').getJobCounts('failed', 'completed');
    expect(counts.failed).toBe(0);
    expect(counts.completed).toBeGreaterThanOrEqual(64);
    expect(logLines.filter((line) => /CROSSSLOT/i.test(line))).toEqual([]);
    expect(logLines.filter((line) => JSON.parse(line).level >= 40)).toEqual([]);
  });
});
