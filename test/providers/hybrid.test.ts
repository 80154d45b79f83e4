/**
 * What only the hybrid provider promises (issue 7), on real services: ram hot, s3 cold (test/support/s3.ts),
 * disk backup, the test Redis. The contract suite covers the rest. Time-dependent behaviour (idle demotion) runs
 * on an injected clock, so no test waits for a TTL to pass.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, storeConfig } from '../../src/config.js';
import { DiskProvider } from '../../src/providers/disk.js';
import { NotSupportedError, ProviderUnavailableError } from '../../src/providers/errors.js';
import { GitProvider } from '../../src/providers/git.js';
import { createHybridProvider, isHybridProvider, type HybridProvider } from '../../src/providers/hybrid.js';
import { tierSettings } from '../../src/providers/hybrid-store.js';
import { createRedisHotChannel, type HotMessage } from '../../src/providers/hybrid-invalidation.js';
import { createProvider } from '../../src/providers/index.js';
import { withMetrics } from '../../src/providers/metrics.js';
import { listDelimited } from '../../src/providers/list-delimited.js';
import { describeWrite } from '../../src/providers/metadata.js';
import { RamProvider, ramWriteBytes } from '../../src/providers/ram.js';
import type { S3Provider } from '../../src/providers/s3.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { closeRedis, createRedis } from '../../src/redis.js';
import { connectRedis, deleteKeys, TEST_REDIS_URL, testRedisConfig, uniquePrefix } from '../support/redis.js';
import { startS3, type S3TestEndpoint } from '../support/s3.js';
import { openTestHybrid, type TestHybrid, type TestHybridOptions } from './fixtures/hybrid-stores.js';
import { expectRestoreWithoutRoomForMessage, readText } from './fixtures/hybrid-calls.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The tiers that served `count` reads of `key`, in order. */
async function tiersOf(provider: StorageProvider, key: string, count: number): Promise<(string | undefined)[]> {
  const tiers: (string | undefined)[] = [];
  for (let i = 0; i < count; i++) tiers.push((await readText(provider, key)).tier);
  return tiers;
}

/** Polls `probe` until it returns something other than undefined (bounded: a lost event fails the test). */
async function eventually<T>(probe: () => T | undefined | Promise<T | undefined>, what: string, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

// Its own endpoint (not the shared one), so the outage test can stop it.
const endpoint: S3TestEndpoint = await startS3();
const opened: TestHybrid[] = [];

async function hybrid(options: TestHybridOptions = {}): Promise<HybridProvider> {
  const store = await openTestHybrid({ endpoint, ...options });
  opened.push(store);
  return store.provider;
}

afterEach(async () => {
  // Sharers first: the owner of the bucket and directory goes last.
  for (const store of opened.splice(0).reverse()) await store.dispose();
});

afterAll(async () => {
  await endpoint.close();
});

describe('hot tier', () => {
  it('promotes on the read that crosses the threshold: the next read is a hot hit', async () => {
    const provider = await hybrid({ accessThreshold: 3 });
    const written = await provider.write('doc', 'version one', { contentType: 'text/plain', metadata: { owner: 'ann' } });
    expect(await tiersOf(provider, 'doc', 3)).toEqual(['cold', 'cold', 'cold']);
    const { info, body } = await provider.read('doc');
    const chunks: Buffer[] = [];
    for await (const chunk of body) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).toString('utf8')).toBe('version one');
    expect(info).toMatchObject({ tier: 'hot', etag: written.etag, updatedAt: written.updatedAt, contentType: 'text/plain', metadata: { owner: 'ann' } });
    const detail = (await provider.stats()).detail as { hot: { promotions: number; hits: number } };
    expect(detail.hot.promotions).toBe(1);
    expect(detail.hot.hits).toBe(1);
  });

  it('serves byte ranges and stats from the hot copy', async () => {
    const provider = await hybrid({ accessThreshold: 1 });
    const written = await provider.write('ranged', '0123456789');
    await readText(provider, 'ranged'); // promotes
    expect(await readText(provider, 'ranged', { range: [2, 5] })).toEqual({ text: '2345', tier: 'hot' });
    expect(await provider.stat('ranged')).toEqual({ ...written, tier: 'hot' });
  });

  it('a write drops the hot copy: the next read is the new content from cold', async () => {
    const provider = await hybrid({ accessThreshold: 1 });
    await provider.write('doc', 'old');
    await readText(provider, 'doc');
    expect(await readText(provider, 'doc')).toEqual({ text: 'old', tier: 'hot' });
    await provider.write('doc', 'new');
    expect(await readText(provider, 'doc')).toEqual({ text: 'new', tier: 'cold' });
    await provider.delete('doc');
    await expect(provider.read('doc')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('never promotes an object larger than an eighth of HOT_MAX_BYTES', async () => {
    const provider = await hybrid({ accessThreshold: 1, hotMaxBytes: 8 * 1024 });
    await provider.write('small', 'x'.repeat(1024));
    await provider.write('large', 'x'.repeat(1025));
    expect(await tiersOf(provider, 'small', 2)).toEqual(['cold', 'hot']);
    expect(await tiersOf(provider, 'large', 3)).toEqual(['cold', 'cold', 'cold']);
  });

  it('demotes a copy left unread for HOT_STORAGE_TTL', async () => {
    let clock = Date.now();
    const provider = await hybrid({ accessThreshold: 1, hotTtlSeconds: 60, now: () => clock });
    await provider.write('idle', 'content');
    expect(await tiersOf(provider, 'idle', 2)).toEqual(['cold', 'hot']);
    clock += 59_000;
    expect(await tiersOf(provider, 'idle', 1)).toEqual(['hot']); // a read restarts the idle time
    clock += 61_000;
    expect(await tiersOf(provider, 'idle', 1)).toEqual(['cold']);
    const detail = (await provider.stats()).detail as { hot: { demotions: { idle: number } }; tiers: { hot: { objects: number } } };
    expect(detail.hot.demotions.idle).toBe(1);
  });

  it('evicts the least recently read copy when HOT_MAX_BYTES would be exceeded', async () => {
    // Each copy is charged what its ram store charges: 1,000 bytes of content, its key and type, 256 per entry.
    const charge = ramWriteBytes('a', 1000, describeWrite({}));
    const provider = await hybrid({ accessThreshold: 1, hotMaxBytes: 4 * charge, maxHotObjectBytes: 1000 });
    for (const key of ['a', 'b', 'c', 'd', 'e']) await provider.write(key, key.repeat(1000));
    for (const key of ['a', 'b', 'c', 'd']) await readText(provider, key); // four copies: the budget
    expect(await tiersOf(provider, 'a', 1)).toEqual(['hot']); // b is now the least recently read
    await readText(provider, 'e'); // needs room
    const detail = (await provider.stats()).detail as { hot: { demotions: { lru: number } }; tiers: { hot: { bytes: number; objects: number } } };
    expect(detail.hot.demotions.lru).toBe(1);
    expect(detail.tiers.hot).toMatchObject({ bytes: 4 * charge, objects: 4 });
    for (const key of ['a', 'c', 'd', 'e']) expect(await tiersOf(provider, key, 1)).toEqual(['hot']);
    expect(await tiersOf(provider, 'b', 1)).toEqual(['cold']);
  });
});

describe('across processes', () => {
  it('a write in one process drops the hot copy in another: its next read is the new content', async () => {
    const parent = await openTestHybrid({ endpoint });
    opened.push(parent);
    await parent.provider.write('shared/doc', 'before');
    const child: ChildProcess = fork(path.join(import.meta.dirname, 'fixtures', 'hybrid-child.ts'), [], {
      execArgv: ['--import', 'tsx'],
      env: {
        ...process.env,
        REDIS_URL: TEST_REDIS_URL,
        HYBRID_S3_ENDPOINT: endpoint.endpoint,
        HYBRID_S3_REGION: endpoint.region,
        HYBRID_S3_ACCESS_KEY_ID: endpoint.credentials.accessKeyId,
        HYBRID_S3_SECRET_ACCESS_KEY: endpoint.credentials.secretAccessKey,
        HYBRID_S3_CHECKSUM: endpoint.checksum,
        HYBRID_S3_BUCKET: parent.shared.bucket,
        HYBRID_BACKUP_DIR: parent.shared.backupDir,
        HYBRID_PREFIX: parent.shared.prefix,
        HYBRID_THRESHOLD: '2',
      },
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    });
    type Reply = { id: number; content?: string; tier?: string; error?: string };
    const replies = new Map<number, Reply>();
    const hotMessages: HotMessage[] = [];
    let ready = false;
    child.on('message', (message: { ready?: boolean; hot?: HotMessage } & Partial<Reply>) => {
      if (message.ready) ready = true;
      else if (message.hot) hotMessages.push(message.hot);
      else if (message.id !== undefined) replies.set(message.id, message as Reply);
    });
    let nextId = 0;
    const childRead = async (key: string) => {
      const id = nextId++;
      child.send({ id, op: 'read', key });
      return eventually(() => replies.get(id), `the child's read ${id}`);
    };
    try {
      await eventually(() => (ready ? true : undefined), 'the child to start', 30_000);
      expect((await childRead('shared/doc')).tier).toBe('cold');
      expect((await childRead('shared/doc')).tier).toBe('cold'); // crosses the threshold of 2
      expect(await childRead('shared/doc')).toEqual({ id: 2, content: 'before', tier: 'hot' });

      await parent.provider.write('shared/doc', 'after');
      await eventually(
        () => hotMessages.find((message) => message.type === 'invalidate' && message.keys.includes('shared/doc')),
        'the invalidation to reach the child',
      );
      expect(await childRead('shared/doc')).toMatchObject({ content: 'after', tier: 'cold' });
    } finally {
      child.disconnect();
      await new Promise((resolve) => (child.exitCode !== null ? resolve(undefined) : child.once('exit', resolve)));
    }
  });

  it('a lost subscriber connection drops every hot copy, and invalidations flow again once it is back', async () => {
    const writer = await openTestHybrid({ endpoint });
    opened.push(writer);
    await writer.provider.write('reconnect/doc', 'one'); // before the reader listens: its invalidation cannot race the reads
    const name = `kyozo-hybrid-reconnect-${process.pid}-${Date.now()}`;
    const named = createRedis(testRedisConfig, 'worker', { connectionName: name });
    const channel = createRedisHotChannel({ redis: named, channel: `${writer.shared.prefix}:hybrid:hybrid-test:hot` });
    const reader = await hybrid({ shared: writer.shared, accessThreshold: 1, channel });
    try {
      expect(await tiersOf(reader, 'reconnect/doc', 2)).toEqual(['cold', 'hot']);

      const clients = (await writer.redis.client('LIST')) as string;
      const subscriber = clients.split('\n').find((line) => line.includes(`name=${name}`) && / sub=[1-9]/.test(line));
      expect(subscriber).toBeDefined();
      await writer.redis.client('KILL', 'ID', /\bid=(\d+)/.exec(subscriber!)![1]!);
      await eventually(() => (channel.live ? undefined : true), 'the channel to notice the lost connection');
      expect(reader.hot.has('reconnect/doc')).toBe(false);
      expect((await readText(reader, 'reconnect/doc')).tier).toBe('cold'); // no hot serving while deaf

      await eventually(() => (channel.live ? true : undefined), 'the channel to be back');
      expect(await tiersOf(reader, 'reconnect/doc', 2)).toEqual(['cold', 'hot']);
      await writer.provider.write('reconnect/doc', 'two');
      await eventually(() => (reader.hot.has('reconnect/doc') ? undefined : true), 'the invalidation after the reconnect');
      expect(await readText(reader, 'reconnect/doc')).toEqual({ text: 'two', tier: 'cold' });
    } finally {
      await reader.close();
      await closeRedis(named);
    }
  });

  it('a subscriber connection that stops carrying bytes without closing is noticed by its PING, and reconnected (session 10)', async () => {
    const writer = await openTestHybrid({ endpoint });
    opened.push(writer);
    await writer.provider.write('silent/doc', 'one');
    // The reader reaches Redis through a proxy that can go silent: no bytes either way, sockets left open.
    let silent = false;
    const sockets = new Set<net.Socket>();
    const redisPort = Number(new URL(TEST_REDIS_URL).port || 6379);
    const proxy = net.createServer((client) => {
      const upstream = net.connect(redisPort, new URL(TEST_REDIS_URL).hostname);
      sockets.add(client).add(upstream);
      client.on('data', (data) => void (silent || upstream.write(data)));
      upstream.on('data', (data) => void (silent || client.write(data)));
      const end = () => (client.destroy(), upstream.destroy());
      client.on('error', end).on('close', end);
      upstream.on('error', end).on('close', end);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const viaProxy = createRedis({ redis: { url: `redis://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`, explicit: true } }, 'worker');
    viaProxy.on('error', () => undefined);
    const channel = createRedisHotChannel({ redis: viaProxy, channel: `${writer.shared.prefix}:hybrid:hybrid-test:hot`, heartbeatMs: 200 });
    const reader = await hybrid({ shared: writer.shared, accessThreshold: 1, channel });
    try {
      expect(await tiersOf(reader, 'silent/doc', 2)).toEqual(['cold', 'hot']);
      silent = true;
      await eventually(() => (channel.live ? undefined : true), 'the heartbeat to notice the silent connection');
      expect(reader.hot.has('silent/doc')).toBe(false);
      silent = false;
      for (const socket of sockets) socket.destroy(); // what the silence left half-open goes; the reconnect gets new ones
      await eventually(() => (channel.live ? true : undefined), 'the channel to be back');
    } finally {
      await reader.close();
      viaProxy.disconnect();
      for (const socket of sockets) socket.destroy();
      proxy.close();
    }
  });

  it('a plan computed from the shared counts is followed by a store that never read the keys', async () => {
    let clock = Date.now();
    const reader = await openTestHybrid({ endpoint, accessThreshold: 3, hotTtlSeconds: 600, now: () => clock });
    opened.push(reader);
    await reader.provider.write('popular', 'read a lot');
    await reader.provider.write('quiet', 'read once');
    // Opened after the writes, so their invalidations cannot race its promotions.
    const follower = await hybrid({ shared: reader.shared, accessThreshold: 3, hotTtlSeconds: 600, now: () => clock });
    await tiersOf(reader.provider, 'popular', 3);
    await tiersOf(reader.provider, 'quiet', 1);

    const plan = await reader.provider.planTiering();
    expect(plan).toEqual({ promote: ['popular'], demote: [] });
    expect(await follower.applyTiering(plan)).toEqual({ promoted: 1, promotedBytes: 10, demoted: 0, demotedBytes: 0, skipped: 0 });
    expect(await tiersOf(follower, 'popular', 1)).toEqual(['hot']);

    clock += 601_000;
    const later = await reader.provider.planTiering();
    expect(later.promote).toEqual([]);
    expect(later.demote.sort()).toEqual(['popular', 'quiet']);
    await reader.provider.publishTiering(later);
    await eventually(() => (follower.hot.has('popular') ? undefined : true), 'the follower to demote "popular"');
    expect(((await follower.stats()).detail as { hot: { demotions: { plan: number } } }).hot.demotions.plan).toBe(1);
  });
});

describe('versions', () => {
  it('keeps every version in the backup tier, addressable by its cold id', async () => {
    const provider = await hybrid();
    const first = await provider.createVersion('v', 'one', { message: 'first', author: { name: 'Ann' } });
    await provider.createVersion('v', 'two', { message: 'second' });
    const restored = await provider.restoreVersion('v', first.versionId);
    expect(restored.message).toBe(`restore ${first.versionId}`);
    const backupVersions = (await provider.backup.listVersions('v')).items;
    expect(backupVersions.map((version) => [version.etag, version.message])).toEqual(
      (await provider.listVersions('v')).items.map((version) => [version.etag, version.message]),
    );
    expect((await readText(provider.backup, 'v')).text).toBe('one');
  });

  it("restores a version whose metadata leaves S3 no room for the default message, as its s3 cold tier does", async () => {
    await expectRestoreWithoutRoomForMessage(await hybrid());
  });

  it('deleteVersion removes the version from cold and its copy from backup', async () => {
    const provider = await hybrid();
    const old = await provider.createVersion('retained', 'old', { message: 'old' });
    const kept = await provider.createVersion('retained', 'new', { message: 'new' });
    await provider.deleteVersion!('retained', old.versionId);
    expect((await provider.listVersions('retained')).items.map((version) => version.versionId)).toEqual([kept.versionId]);
    expect((await provider.backup.listVersions('retained')).items.map((version) => version.message)).toEqual(['new']);
    expect((await readText(provider, 'retained')).text).toBe('new');
  });

  it('with an every-write cold tier, plain writes are versions in the backup tier too', async () => {
    const repo = await mkdtemp(path.join(os.tmpdir(), 'kyozo-hybrid-git-'));
    const backupDir = await mkdtemp(path.join(os.tmpdir(), 'kyozo-hybrid-backup-'));
    const redis = await connectRedis('worker');
    const prefix = uniquePrefix('hybrid-git');
    const provider = await createHybridProvider({
      name: 'git-cold',
      hot: new RamProvider({ maxBytes: 1024 * 1024 }),
      cold: await GitProvider.open({ repoPath: repo }),
      backup: new DiskProvider({ root: backupDir, fsync: false }),
      redis,
      keyPrefix: prefix,
      accessThreshold: 5,
      hotTtlSeconds: 60,
      hotMaxBytes: 1024 * 1024,
    });
    try {
      expect(provider.capabilities.versioning).toBe('every-write');
      const info = await provider.write('w', 'plain write');
      expect(info.versionId).toBeDefined();
      const copies = (await provider.backup.listVersions('w')).items;
      expect(copies).toHaveLength(1);
      expect(copies[0]!.etag).toBe(info.etag);
    } finally {
      await provider.close();
      await deleteKeys(redis, prefix);
      await closeRedis(redis);
      await rm(repo, { recursive: true, force: true });
      await rm(backupDir, { recursive: true, force: true });
    }
  });
});

describe('cold outage', () => {
  it.skipIf(!endpoint.canStop)('reads come from backup, writes fail retryably and succeed once cold is back', async () => {
    const store = await openTestHybrid({
      endpoint,
      accessThreshold: 100,
      s3: { resilience: { timeoutMs: 2_000, retries: 1, initialDelayMs: 10, maxDelayMs: 20, breakAfter: 2, halfOpenAfterMs: 200 }, healthTimeoutMs: 1_000 },
    });
    opened.push(store);
    const { provider } = store;
    await provider.write('outage/doc', 'before the outage');
    const version = await provider.createVersion('outage/versioned', 'v1', { message: 'kept' });
    expect((await provider.health()).status).toBe('ok');

    await endpoint.stop();
    try {
      expect(await readText(provider, 'outage/doc')).toEqual({ text: 'before the outage', tier: 'backup' });
      expect((await provider.stat('outage/versioned')).versionId).toBe(version.versionId);
      expect((await readText(provider, 'outage/versioned', { versionId: version.versionId })).text).toBe('v1');
      expect((await provider.listVersions('outage/versioned')).items.map((v) => v.versionId)).toEqual([version.versionId]);
      expect((await provider.list({ prefix: 'outage/' })).items.map((item) => item.key)).toEqual(['outage/doc', 'outage/versioned']);
      expect(await listDelimited(provider, { delimiter: '/' })).toMatchObject({ prefixes: ['outage/'], items: [] });
      const degraded = await provider.health();
      expect(degraded.status).toBe('degraded');
      expect(degraded.detail).toContain('reads served from backup');

      const failed = await provider.write('outage/doc', 'during the outage').catch((error: unknown) => error);
      expect(failed).toBeInstanceOf(ProviderUnavailableError);
      expect((failed as ProviderUnavailableError).retryable).toBe(true);
      // Backup alone is not "written": it still serves the content from before.
      expect((await readText(provider, 'outage/doc')).text).toBe('before the outage');
    } finally {
      await endpoint.start();
    }

    // What the job queue does: retry until the write lands (the circuit lets a probe through after 200 ms).
    let written = false;
    for (let attempt = 0; attempt < 50 && !written; attempt++) {
      written = await provider.write('outage/doc', 'during the outage').then(
        () => true,
        async (error: unknown) => {
          if (!(error instanceof ProviderUnavailableError)) throw error;
          await sleep(100);
          return false;
        },
      );
    }
    expect(written).toBe(true);
    expect(await readText(provider, 'outage/doc')).toEqual({ text: 'during the outage', tier: 'cold' });
    expect((await readText(provider.backup, 'outage/doc')).text).toBe('during the outage');
    expect((await provider.health()).status).toBe('ok');
  });

  it.skipIf(!endpoint.canStop)('health is down when cold and backup are both down', async () => {
    const blocked = path.join(await mkdtemp(path.join(os.tmpdir(), 'kyozo-hybrid-blocked-')), 'file');
    await writeFile(blocked, 'not a directory');
    const store = await openTestHybrid({ endpoint, s3: { resilience: { retries: 0, breakAfter: 1 }, healthTimeoutMs: 1_000 } });
    opened.push(store);
    const broken = await createHybridProvider({
      name: 'broken',
      hot: new RamProvider({ maxBytes: 1024 }),
      cold: store.provider.cold,
      backup: new DiskProvider({ root: path.join(blocked, 'below'), fsync: false }),
      redis: store.redis,
      keyPrefix: store.shared.prefix,
      accessThreshold: 5,
      hotTtlSeconds: 60,
      hotMaxBytes: 1024,
    });
    await endpoint.stop();
    try {
      const report = await broken.health();
      expect(report.status).toBe('down');
      expect(report.detail).toMatch(/cold \(s3\): down.*backup \(disk\): down/);
    } finally {
      await endpoint.start();
      await rm(path.dirname(blocked), { recursive: true, force: true });
    }
  });
});

describe('listing by delimiter', () => {
  it("describes only the objects it answers with: cold's keys of a common prefix get no HEAD", async () => {
    const provider = await hybrid();
    for (let i = 0; i < 40; i++) await provider.write(`dir/big/${String(i).padStart(2, '0')}`, 'x');
    await provider.write('dir/file', 'x');
    const commands: string[] = [];
    (provider.cold as S3Provider).client.middlewareStack.add(
      (next, context) => async (args) => {
        commands.push(String(context.commandName));
        return next(args);
      },
      { step: 'initialize', name: 'request-log' },
    );
    const page = await listDelimited(provider, { prefix: 'dir/', delimiter: '/' });
    expect(page).toMatchObject({ prefixes: ['dir/big/'], items: [{ key: 'dir/file', size: 1 }] });
    // Through cold's full listing, the first page of 64 keys was 41 HEADs.
    expect(commands.filter((name) => name === 'HeadObjectCommand')).toEqual(['HeadObjectCommand']);
  });
});

describe('presigned URLs', () => {
  it('delegates GET to an s3 cold tier and refuses PUT', async () => {
    const provider = await hybrid();
    expect(provider.capabilities.presign).toBe('native');
    expect(await provider.presign('k', { method: 'GET', expiresIn: 60 })).toContain(endpoint.endpoint.replace(/^https?:\/\//, ''));
    await expect(provider.presign('k', { method: 'PUT', expiresIn: 60 })).rejects.toBeInstanceOf(NotSupportedError);
  });
});

describe('from configuration', () => {
  const redisAndRoot = async () => {
    const redis = await connectRedis('worker');
    const root = await mkdtemp(path.join(os.tmpdir(), 'kyozo-hybrid-config-'));
    return { redis, root, async cleanup() {
      await closeRedis(redis);
      await rm(root, { recursive: true, force: true });
    } };
  };

  it('builds each tier as the store <name>--<tier>, with per-tier settings over the store’s over the global ones', () => {
    const env = {
      STORES: 'media:hybrid',
      S3_BUCKET: 'global',
      MEDIA_S3_BUCKET: 'media',
      MEDIA__BACKUP_S3_BUCKET: 'media-backup',
      HYBRID_BACKUP: 's3',
    };
    const config = loadConfig(env);
    const settings = storeConfig(config, { name: 'media', kind: 'hybrid' });
    expect(tierSettings(settings, 'cold', 's3', config)).toMatchObject({ name: 'media--cold', kind: 's3', S3_BUCKET: 'media' });
    expect(tierSettings(settings, 'backup', 's3', config)).toMatchObject({ name: 'media--backup', kind: 's3', S3_BUCKET: 'media-backup' });
  });

  it('refuses tiers that would share data (one bucket and prefix, a prefix or directory within another), and a hybrid tier', async () => {
    const { redis, root, cleanup } = await redisAndRoot();
    try {
      const build = (env: Record<string, string>) => {
        const config = loadConfig({ STORAGE_ROOT_DIR: root, S3_BUCKET: 'one', ...env });
        return createProvider(storeConfig(config, { name: 'media', kind: 'hybrid' }), { redis, config });
      };
      const sharing = /the cold tier \(s3 bucket "one" .*\) and the backup tier \(s3 bucket "one" .*\) would share data/;
      await expect(build({ HYBRID_BACKUP: 's3' })).rejects.toThrow(sharing);
      // The same prefix as the provider reads it, and one prefix within the other (the default '' holds them all).
      await expect(build({ HYBRID_BACKUP: 's3', MEDIA__COLD_S3_PREFIX: 'data', MEDIA__BACKUP_S3_PREFIX: '/data/' })).rejects.toThrow(sharing);
      await expect(build({ HYBRID_BACKUP: 's3', MEDIA__BACKUP_S3_PREFIX: 'backup/' })).rejects.toThrow(sharing);
      await expect(build({ HYBRID_HOT: 's3', MEDIA__HOT_S3_PREFIX: 'hot/' })).rejects.toThrow(/the hot tier \(s3 bucket "one" .* prefix "hot\/"\) and the cold tier .* would share data/);
      await expect(build({ HYBRID_COLD: 'disk', HYBRID_BACKUP: 'git', MEDIA__BACKUP_GIT_REPO_PATH: path.join(root, 'media--cold', 'repo') })).rejects.toThrow(
        /the cold tier \(directory .*\) and the backup tier \(git repository .*\) would share data/,
      );
      await expect(build({ HYBRID_COLD: 'hybrid' })).rejects.toBeInstanceOf(ConfigError);
      // Side by side in one bucket is not sharing.
      const apart = await build({ HYBRID_BACKUP: 's3', S3_ENDPOINT: 'http://127.0.0.1:9', MEDIA__COLD_S3_PREFIX: 'data', MEDIA__BACKUP_S3_PREFIX: 'data-backup' }).then(
        async (store) => void (await store.close()),
        (error: unknown) => error,
      );
      expect(apart).not.toBeInstanceOf(ConfigError);
    } finally {
      await cleanup();
    }
  });

  it('a store from configuration serves its tiers, a disk tier living in <root>/<store>--<tier>', async () => {
    const { redis, root, cleanup } = await redisAndRoot();
    const prefix = uniquePrefix('hybrid-config');
    const config = loadConfig({
      STORAGE_ROOT_DIR: root,
      QUEUE_PREFIX: prefix,
      HYBRID_COLD: 'disk',
      ACCESS_THRESHOLD: '1',
      MEDIA__COLD_DISK_FSYNC: 'false',
    });
    const provider = withMetrics(await createProvider(storeConfig(config, { name: 'media', kind: 'hybrid' }), { redis, config }));
    try {
      expect(isHybridProvider(provider)).toBe(true);
      await provider.write('a/b', 'content');
      expect(await tiersOf(provider, 'a/b', 2)).toEqual(['cold', 'hot']);
      expect((await readText(new DiskProvider({ root: path.join(root, 'media--backup'), fsync: false }), 'a/b')).text).toBe('content');
      expect((await readText(new DiskProvider({ root: path.join(root, 'media--cold'), fsync: false }), 'a/b')).text).toBe('content');
    } finally {
      await provider.close();
      await deleteKeys(redis, prefix);
      await cleanup();
    }
  });
});

beforeAll(() => {
  console.log(`hybrid tests run against ${endpoint.kind} at ${endpoint.endpoint}`);
});
