import { describe, expect, it } from 'vitest';
import { DRAIN_MS } from '../src/api/server.js';
import { ConfigError, loadConfig, storeConfig } from '../src/config.js';
import { SHUTDOWN_GRACE_MS } from '../src/lifecycle.js';

/** The longest delay Node's timers take: above it they fire after 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

describe('config', () => {
  it('defaults to one disk store named default under ./data', () => {
    const config = loadConfig({});
    expect(config.stores).toEqual([{ name: 'default', kind: 'disk' }]);
    expect(config.storageRootDir.endsWith('data')).toBe(true);
    expect(config.redis).toMatchObject({ url: 'redis://127.0.0.1:6379', explicit: false });
    expect(config.queuePrefix).toBe('{kyozo}');
    expect(config.payloads.stagingInlineMax).toBe(256 * 1024);
  });

  it.each([
    [{ PORT: 'eighty' }, /^PORT="eighty": /],
    [{ JOB_ATTEMPTS: '0' }, /^JOB_ATTEMPTS="0": /],
    [{ COMPLETED_JOBS_KEEP_COUNT: '0' }, /^COMPLETED_JOBS_KEEP_COUNT="0": /],
    [{ FAILED_JOBS_KEEP_SECONDS: '1.5' }, /^FAILED_JOBS_KEEP_SECONDS="1.5": /],
    [{ DISK_FSYNC: 'maybe' }, /^DISK_FSYNC="maybe": expected true or false/],
    [{ STORES: 'docs:dropbox' }, /unknown provider kind "dropbox"/],
    [{ STORES: 'docs:disk,docs:ram' }, /store "docs" is named twice/],
    [{ STORES: 'Docs' }, /not name:kind/],
    [{ BACKUP_STORE: 'nowhere' }, /^BACKUP_STORE="nowhere": no such store/],
    [{ STORES: 'docs:disk', DOCS_DISK_FSYNC: 'perhaps' }, /^DOCS_DISK_FSYNC="perhaps"/],
    [{ STAGING_TTL: '3600' }, /^STAGING_TTL="3600": must be longer than UNAVAILABLE_RETRY_SECONDS \(3600\) \+ 60 s/],
    [{ PORT: ' ' }, /^PORT=" ": expected a whole number/],
    [{ HOST: '0.0.0.0 ' }, /^HOST="0.0.0.0 ": must not start or end with spaces/],
    [{ STORAGE_ROOT_DIR: ' ./data' }, /^STORAGE_ROOT_DIR=" .\/data": must not start or end with spaces/],
    [{ PORT: '70000' }, /^PORT="70000": /],
    [{ REDIS_URL: 'localhost:6379' }, /^REDIS_URL="localhost:6379": expected redis:\/\/host:port/],
    [{ REDIS_URL: 'redis://127.0.0.1:99999' }, /^REDIS_URL="redis:\/\/127.0.0.1:99999": expected redis:\/\/host:port .*a port from 1 to 65535/],
    [{ REDIS_URL: 'redis://127.0.0.1:abc' }, /^REDIS_URL="redis:\/\/127.0.0.1:abc": expected redis:\/\/host:port/],
    [{ REDIS_URL: 'redis://127.0.0.1:0' }, /^REDIS_URL="redis:\/\/127.0.0.1:0": expected redis:\/\/host:port/],
    [{ REDIS_URL: 'redis://127.0.0.1:6379/abc' }, /^REDIS_URL="redis:\/\/127.0.0.1:6379\/abc": expected .*a database number/],
    [{ STORES: 'my-docs:disk,my_docs:disk' }, /stores "my-docs" and "my_docs" would share the settings prefix MY_DOCS_/],
    [{ REDIS_CLUSTER_NODES: '127.0.0.1:7000', QUEUE_PREFIX: 'kyozo' }, /^QUEUE_PREFIX="kyozo": with REDIS_CLUSTER_NODES it needs a hash tag/],
    // Redis hashes the whole key when its first {...} is empty: {kyozo} after it does not count.
    [{ REDIS_CLUSTER_NODES: '127.0.0.1:7000', QUEUE_PREFIX: '{}{kyozo}' }, /^QUEUE_PREFIX="\{\}\{kyozo\}": with REDIS_CLUSTER_NODES it needs a hash tag/],
    [{ JOB_ATTEMPTS: '40' }, /^JOB_ATTEMPTS="40": at most 15/],
    [{ CLEANUP_CRON: 'every hour' }, /^CLEANUP_CRON="every hour": not a cron pattern/],
    [{ CLEANUP_CRON: '0 * * *' }, /^CLEANUP_CRON="0 \* \* \*": not a cron pattern: 4 fields/],
    [{ BACKUP_CRON: '0 25 * * *' }, /^BACKUP_CRON="0 25 \* \* \*": not a cron pattern/],
    [{ CLEANUP_CRON: '0 0 31 2,4 *' }, /^CLEANUP_CRON="0 0 31 2,4 \*": never fires/],
    // Session 11: git settings the store would refuse at open, refused at start naming the variable.
    [{ STORES: 'docs:git', GIT_BRANCH: 'release 1' }, /^GIT_BRANCH="release 1": branch name "release 1" must not contain spaces/],
    [{ STORES: 'docs:git', DOCS_GIT_USER_NAME: 'Kyozo <bot>' }, /^DOCS_GIT_USER_NAME="Kyozo <bot>": the committer name must not contain '<'/],
    // Session 11: a token a Bearer header cannot carry; spaces around S3_PREFIX; secrets in refused values.
    [{ API_TOKENS: 'correct horse battery staple' }, /^API_TOKENS=\(value not shown\): entry 1 has a space or a character outside printable ASCII/],
    [{ API_TOKENS: 'a-real-token-0123456789,mot-de-passe-sécurisé-2026' }, /^API_TOKENS=\(value not shown\): entry 2 has a space/],
    [{ STORES: 'docs:s3', S3_BUCKET: 'b', S3_PREFIX: 'data ' }, /^S3_PREFIX="data ": must not start or end with spaces/],
    [{ STORES: 'docs:s3', S3_BUCKET: 'b', DOCS_S3_PREFIX: '   ' }, /^DOCS_S3_PREFIX="   ": must not start or end with spaces/],
    [{ WEBHOOK_URLS: 'https://hooks.example/T0AAA/XyZsEcReT,hooks.example.com/x' }, /^WEBHOOK_URLS=\(value not shown\): entry 2 is not a URL/],
    [{ REDIS_URL: 'redis://default:Sup3r/Secret@redis.internal:0' }, /^REDIS_URL="redis:\/\/\*\*\*@redis.internal:0": expected/],
    [{ REDIS_URL: 'redis://user:hunter2 secret@redis:0' }, /^REDIS_URL="redis:\/\/\*\*\*@redis:0": expected/],
    [{ WAIT_TIMEOUT_MS: String(MAX_TIMER_MS + 1) }, /^WAIT_TIMEOUT_MS="2147483648": at most 2147483647 ms/],
    [{ WORKER_SHUTDOWN_TIMEOUT_MS: '3000000000' }, /^WORKER_SHUTDOWN_TIMEOUT_MS="3000000000": at most \d+ ms/],
    [{ STORES: 'docs:s3', S3_BUCKET: 'b', S3_ENDPOINT: 'minio:9000' }, /^S3_ENDPOINT="minio:9000": expected http:\/\/host:port or https:\/\/host/],
    [{ STORES: 'docs:s3', S3_BUCKET: 'b', DOCS_S3_ENDPOINT: 'localhost:9000' }, /^DOCS_S3_ENDPOINT="localhost:9000": expected http:\/\//],
    [{ STORES: 'docs:s3', S3_BUCKET: 'b', S3_ENDPOINT: 'ftp://minio:9000' }, /^S3_ENDPOINT="ftp:\/\/minio:9000": expected http:\/\//],
    [{ STORES: 'docs:s3', S3_BUCKET: 'b', S3_PUBLIC_ENDPOINT: 'localhost:9000' }, /^S3_PUBLIC_ENDPOINT="localhost:9000": expected http:\/\/host:port/],
    [{ STORES: 'docs:s3', S3_BUCKET: 'b', DOCS_S3_PUBLIC_ENDPOINT: 'ftp://x' }, /^DOCS_S3_PUBLIC_ENDPOINT="ftp:\/\/x": expected http:\/\//],
    [{ STORES: 'docs:s3', S3_BUCKET: 'b', DOCS_S3_VERSIONING: 'yes' }, /^DOCS_S3_VERSIONING="yes": expected auto, native or explicit/],
    [{ STAGING_INLINE_MAX: String(10 * 1024 ** 3) }, /^STAGING_INLINE_MAX="10737418240": at most 16777216 \(16 MiB\)/],
    [{ STAGING_INLINE_MAX: String(16 * 1024 ** 2 + 1) }, /^STAGING_INLINE_MAX="16777217": at most 16777216/],
    [{ STAGING_INLINE_MAX: '2048', MAX_OBJECT_BYTES: '1024' }, /^STAGING_INLINE_MAX="2048": must not exceed MAX_OBJECT_BYTES \(1024\)/],
    [{ STORES: 'docs:s3', S3_BUCKET: 'b', S3_MULTIPART_THRESHOLD: String(10 * 1024 ** 3) }, /^S3_MULTIPART_THRESHOLD="10737418240": at most \d+ \(S3 takes 5 GiB in one PutObject/],
    [{ STORES: 'docs:s3', S3_BUCKET: 'b', S3_MULTIPART_THRESHOLD: String(5 * 1024 ** 3 + 1) }, /^S3_MULTIPART_THRESHOLD="5368709121": at most /],
    [{ MAX_OBJECT_BYTES: '0' }, /^MAX_OBJECT_BYTES="0": /],
    [{ RAM_MAX_BYTES: '0' }, /^RAM_MAX_BYTES="0": /],
    [{ STORES: 'cache:ram', CACHE_RAM_MAX_BYTES: '0' }, /^CACHE_RAM_MAX_BYTES="0": /],
    [{ REDIS_CLUSTER_NODES: 'a:99999', QUEUE_PREFIX: '{k}' }, /^REDIS_CLUSTER_NODES="a:99999": entry 1 "a:99999" has port 99999: expected 1 to 65535/],
    [{ REDIS_CLUSTER_NODES: 'a:7000,b:0', QUEUE_PREFIX: '{k}' }, /^REDIS_CLUSTER_NODES="a:7000,b:0": entry 2 "b:0" has port 0/],
    [{ REDIS_CLUSTER_NODES: 'a', QUEUE_PREFIX: '{k}' }, /^REDIS_CLUSTER_NODES="a": entry 1 "a" is not host:port/],
    [{ HOST: ' ' }, /^HOST=" ": must not be blank/],
    [{ QUEUE_PREFIX: ' ' }, /^QUEUE_PREFIX=" ": must not be blank/],
    [{ STORAGE_ROOT_DIR: ' ' }, /^STORAGE_ROOT_DIR=" ": must not be blank/],
    [{ STORES: 'g:git', GIT_REPO_PATH: ' ' }, /GIT_REPO_PATH=" ": must not be blank/],
    [{ STORES: 'g:git', GIT_USER_NAME: ' ' }, /GIT_USER_NAME=" ": must not be blank/],
    [{ STORES: 'g:git', G_GIT_USER_EMAIL: ' ' }, /G_GIT_USER_EMAIL=" ": must not be blank/],
    [{ STORES: 'docs:s3', S3_BUCKET: ' ' }, /S3_BUCKET=" ": must not be blank/],
    [{ STORES: 'docs:s3', S3_BUCKET: 'b', AWS_REGION: ' ' }, /AWS_REGION=" ": must not be blank/],
    [{ API_TOKENS: 'change-me-to-a-long-random-token' }, /^API_TOKENS=\(value not shown\): entry 1 is the placeholder from \.env\.example/],
    [{ API_TOKENS: 'a-real-token-0123456789,My-CHANGE-ME-token-please' }, /^API_TOKENS=\(value not shown\): entry 2 is the placeholder/],
    [{ API_TOKENS: 'short-token' }, /^API_TOKENS=\(value not shown\): entry 1 is shorter than 16 characters/],
    [{ STAGING_KIND: 'nfs' }, /^STAGING_KIND="nfs"/],
    // Its settings would be the staging area's (STAGING_S3_*): the two could never be told apart.
    [{ STAGING_KIND: 's3', STORES: 'docs:disk,staging:s3', S3_BUCKET: 'b' }, /^STORES: with STAGING_KIND=s3 no store may be named "staging"/],
  ])('a bad value is one line naming the variable: %o', (env, message) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(message);
    try {
      loadConfig(env);
    } catch (error) {
      expect((error as Error).message).not.toContain('\n');
    }
  });

  it('a store may be named "staging" while the staging area is on disk', () => {
    expect(loadConfig({ STORES: 'staging:disk' }).stores).toEqual([{ name: 'staging', kind: 'disk' }]);
  });

  it('per-store settings override the global ones', () => {
    const config = loadConfig({ STORES: 'docs:git,media:git', GIT_BRANCH: 'trunk', DOCS_GIT_BRANCH: 'docs-main' });
    expect(storeConfig(config, { name: 'docs', kind: 'git' }).GIT_BRANCH).toBe('docs-main');
    expect(storeConfig(config, { name: 'media', kind: 'git' }).GIT_BRANCH).toBe('trunk');
  });

  it('takes cron patterns of five or six fields and aliases; an empty one turns its schedule off', () => {
    const config = loadConfig({ TIER_CRON: '*/30 * * * * *', CLEANUP_CRON: '@hourly', BACKUP_CRON: '' });
    expect(config.maintenance).toMatchObject({ tierCron: '*/30 * * * * *', cleanupCron: '@hourly', backupCron: '' });
  });

  it('refuses webhook URLs that could never be delivered to, without echoing a password', () => {
    expect(loadConfig({ WEBHOOK_URLS: 'https://hooks.example/in, http://127.0.0.1:9000/x' }).events.webhookUrls).toEqual([
      'https://hooks.example/in',
      'http://127.0.0.1:9000/x',
    ]);
    expect(() => loadConfig({ WEBHOOK_URLS: 'https://hooks.example/in?events=a,b' })).toThrow(/WEBHOOK_URLS.*entry 2 is not a URL.*%2C/);
    expect(() => loadConfig({ WEBHOOK_URLS: 'ftp://hooks.example/in' })).toThrow(/entry 1 is ftp:/);
    let message = '';
    try {
      loadConfig({ WEBHOOK_URLS: 'https://user:s3cret@hooks.example/in' });
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).toMatch(/WEBHOOK_URLS=\(value not shown\): entry 1 carries credentials/);
    expect(message).not.toContain('s3cret');
  });

  it('refuses one webhook URL spelled two ways, which would get every event twice; a repeated entry is one (session 11)', () => {
    expect(() => loadConfig({ WEBHOOK_URLS: 'https://Hooks.example/in,https://hooks.example:443/in' })).toThrow(/entries 1 and 2 are one URL spelled two ways/);
    expect(() => loadConfig({ WEBHOOK_URLS: 'http://a.example/x,https://hooks.example,HTTPS://hooks.example/' })).toThrow(/entries 2 and 3/);
    expect(() => loadConfig({ WEBHOOK_URLS: 'https://hooks.example/x,https://hooks.example/x#a' })).toThrow(/entries 1 and 2 are one URL/); // a fragment is never sent
    expect(loadConfig({ WEBHOOK_URLS: 'https://hooks.example/in,https://hooks.example/in' }).events.webhookUrls).toEqual([
      'https://hooks.example/in',
      'https://hooks.example/in',
    ]);
    expect(loadConfig({ WEBHOOK_URLS: 'https://hooks.example/in,https://hooks.example/IN' }).events.webhookUrls).toHaveLength(2);
  });

  it('takes timeouts up to what a timer can wait, the shutdown deadline included', () => {
    expect(loadConfig({ WAIT_TIMEOUT_MS: String(MAX_TIMER_MS) }).payloads.waitTimeoutMs).toBe(MAX_TIMER_MS);
    // npm start's shutdown deadline is DRAIN_MS + WORKER_SHUTDOWN_TIMEOUT_MS + SHUTDOWN_GRACE_MS, one timer.
    const longest = MAX_TIMER_MS - DRAIN_MS - SHUTDOWN_GRACE_MS;
    expect(loadConfig({ WORKER_SHUTDOWN_TIMEOUT_MS: String(longest) }).workers.shutdownTimeoutMs).toBe(longest);
    expect(() => loadConfig({ WORKER_SHUTDOWN_TIMEOUT_MS: String(longest + 1) })).toThrow(ConfigError);
  });

  it('takes Redis URLs with credentials, TLS, IPv6, no port or a database number', () => {
    for (const url of ['redis://:secret@redis.internal:6380/2', 'rediss://cache.example.com', 'redis://user:pw@[::1]:6379/0', 'redis://localhost']) {
      expect(loadConfig({ REDIS_URL: url }).redis.url, url).toBe(url);
    }
  });

  it('takes S3 endpoints with their scheme', () => {
    for (const endpoint of ['http://minio:9000', 'https://s3.example.com']) {
      const config = loadConfig({ STORES: 'docs:s3', S3_BUCKET: 'b', S3_ENDPOINT: endpoint });
      expect(storeConfig(config, { name: 'docs', kind: 's3' }).S3_ENDPOINT).toBe(endpoint);
    }
  });

  it('presigned URLs of an s3 store can name a public endpoint, per store like every S3 setting', () => {
    const config = loadConfig({
      STORES: 'docs:s3,media:s3',
      S3_BUCKET: 'b',
      S3_ENDPOINT: 'http://minio:9000',
      DOCS_S3_PUBLIC_ENDPOINT: 'http://localhost:9000',
    });
    expect(storeConfig(config, { name: 'docs', kind: 's3' })).toMatchObject({ S3_ENDPOINT: 'http://minio:9000', S3_PUBLIC_ENDPOINT: 'http://localhost:9000' });
    expect(storeConfig(config, { name: 'media', kind: 's3' }).S3_PUBLIC_ENDPOINT).toBeUndefined();
  });

  it('S3_VERSIONING pins an s3 store\'s versioning mode, per store; auto by default', () => {
    const config = loadConfig({ STORES: 'docs:s3,media:s3,logs:s3', S3_BUCKET: 'b', S3_VERSIONING: 'native', LOGS_S3_VERSIONING: 'explicit' });
    expect(storeConfig(config, { name: 'docs', kind: 's3' }).S3_VERSIONING).toBe('native');
    expect(storeConfig(config, { name: 'logs', kind: 's3' }).S3_VERSIONING).toBe('explicit');
    expect(storeConfig(loadConfig({ STORES: 'docs:s3' }), { name: 'docs', kind: 's3' }).S3_VERSIONING).toBe('auto');
  });

  it('STAGING_INLINE_MAX defaults to 256 KiB, or MAX_OBJECT_BYTES when that is smaller; 16 MiB is taken', () => {
    expect(loadConfig({ MAX_OBJECT_BYTES: '1024' }).payloads.stagingInlineMax).toBe(1024);
    expect(loadConfig({ STAGING_INLINE_MAX: String(16 * 1024 ** 2) }).payloads.stagingInlineMax).toBe(16 * 1024 ** 2);
    expect(loadConfig({ STAGING_INLINE_MAX: '0' }).payloads.stagingInlineMax).toBe(0);
  });

  it('takes S3_MULTIPART_THRESHOLD from 5 MiB up to what one Buffer and one PutObject hold', () => {
    const threshold = (value: string) =>
      storeConfig(loadConfig({ STORES: 'docs:s3', S3_MULTIPART_THRESHOLD: value }), { name: 'docs', kind: 's3' }).S3_MULTIPART_THRESHOLD;
    expect(threshold(String(5 * 1024 ** 2))).toBe(5 * 1024 ** 2);
    expect(threshold(String(4 * 1024 ** 3))).toBe(4 * 1024 ** 3);
    expect(() => threshold(String(5 * 1024 ** 2 - 1))).toThrow(/^S3_MULTIPART_THRESHOLD="5242879": /);
  });

  it('checks git settings only for git stores (a global GIT_BRANCH no git store uses stops nothing)', () => {
    expect(loadConfig({ STORES: 'files:disk', GIT_BRANCH: 'release 1' }).stores).toHaveLength(1);
    expect(() => loadConfig({ STORES: 'files:disk,docs:git', GIT_BRANCH: 'release 1' })).toThrow(/^GIT_BRANCH="release 1"/);
  });

  it('takes Redis Cluster nodes as host:port with ports 1 to 65535', () => {
    expect(loadConfig({ REDIS_CLUSTER_NODES: 'a:1, b:65535' }).redis.clusterNodes).toEqual([
      { host: 'a', port: 1 },
      { host: 'b', port: 65535 },
    ]);
    expect(loadConfig({}).redis.clusterNodes).toBeUndefined();
    // ioredis takes an IPv6 address without its brackets (with them it looked the name "[::1]" up in DNS).
    expect(loadConfig({ REDIS_CLUSTER_NODES: '[::1]:7000,[fd00::2]:7001' }).redis.clusterNodes).toEqual([
      { host: '::1', port: 7000 },
      { host: 'fd00::2', port: 7001 },
    ]);
    expect(() => loadConfig({ REDIS_CLUSTER_NODES: '[::1:7000' })).toThrow(/entry 1 "\[::1:7000" is not host:port/);
  });

  it('takes API tokens of 16 characters or more', () => {
    expect(loadConfig({ API_TOKENS: '0123456789abcdef, another-long-token' }).apiTokens).toEqual(['0123456789abcdef', 'another-long-token']);
  });

  it('accepts HOT_MAX_BYTES=0 (the hot tier off: hybrid-hot.ts admits nothing into a budget of 0)', () => {
    expect(loadConfig({ HOT_MAX_BYTES: '0' }).tiering.hotMaxBytes).toBe(0);
  });

  it('keeps finished jobs a day (completed, the newest 10,000) and a week (failed, 50,000) unless told otherwise', () => {
    expect(loadConfig({}).jobRetention).toEqual({ completedAgeSeconds: 86_400, completedCount: 10_000, failedAgeSeconds: 604_800, failedCount: 50_000 });
    expect(loadConfig({ COMPLETED_JOBS_KEEP_COUNT: '200000', FAILED_JOBS_KEEP_SECONDS: '3600' }).jobRetention).toMatchObject({
      completedCount: 200_000,
      failedAgeSeconds: 3600,
    });
  });

  it('empty values count as unset', () => {
    expect(loadConfig({ PORT: '', STORES: '' }).port).toBe(3000);
  });
});
