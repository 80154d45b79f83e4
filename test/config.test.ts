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
    [{ DISK_FSYNC: 'maybe' }, /^DISK_FSYNC="maybe": expected true or false/],
    [{ STORES: 'docs:dropbox' }, /unknown provider kind "dropbox"/],
    [{ STORES: 'docs:disk,docs:ram' }, /store "docs" is named twice/],
    [{ STORES: 'Docs' }, /not name:kind/],
    [{ BACKUP_STORE: 'nowhere' }, /^BACKUP_STORE="nowhere": no such store/],
    [{ STORES: 'docs:disk', DOCS_DISK_FSYNC: 'perhaps' }, /^DOCS_DISK_FSYNC="perhaps"/],
    [{ STAGING_TTL: '3600' }, /^STAGING_TTL="3600": must be longer than UNAVAILABLE_RETRY_SECONDS \(3600\) \+ 60 s/],
    [{ PORT: ' ' }, /^PORT=" ": expected a whole number/],
    [{ PORT: '70000' }, /^PORT="70000": /],
    [{ REDIS_URL: 'localhost:6379' }, /^REDIS_URL="localhost:6379": expected redis:\/\/host:port/],
    [{ STORES: 'my-docs:disk,my_docs:disk' }, /stores "my-docs" and "my_docs" would share the settings prefix MY_DOCS_/],
    [{ REDIS_CLUSTER_NODES: '127.0.0.1:7000', QUEUE_PREFIX: 'kyozo' }, /^QUEUE_PREFIX="kyozo": with REDIS_CLUSTER_NODES it needs a hash tag/],
    [{ CLEANUP_CRON: 'every hour' }, /^CLEANUP_CRON="every hour": not a cron pattern/],
    [{ CLEANUP_CRON: '0 * * *' }, /^CLEANUP_CRON="0 \* \* \*": not a cron pattern: 4 fields/],
    [{ BACKUP_CRON: '0 25 * * *' }, /^BACKUP_CRON="0 25 \* \* \*": not a cron pattern/],
    [{ WAIT_TIMEOUT_MS: String(MAX_TIMER_MS + 1) }, /^WAIT_TIMEOUT_MS="2147483648": at most 2147483647 ms/],
    [{ WORKER_SHUTDOWN_TIMEOUT_MS: '3000000000' }, /^WORKER_SHUTDOWN_TIMEOUT_MS="3000000000": at most \d+ ms/],
    [{ STORES: 'docs:s3', S3_BUCKET: 'b', S3_ENDPOINT: 'minio:9000' }, /^S3_ENDPOINT="minio:9000": expected http:\/\/host:port or https:\/\/host/],
    [{ STORES: 'docs:s3', S3_BUCKET: 'b', DOCS_S3_ENDPOINT: 'localhost:9000' }, /^DOCS_S3_ENDPOINT="localhost:9000": expected http:\/\//],
    [{ STORES: 'docs:s3', S3_BUCKET: 'b', S3_ENDPOINT: 'ftp://minio:9000' }, /^S3_ENDPOINT="ftp:\/\/minio:9000": expected http:\/\//],
  ])('a bad value is one line naming the variable: %o', (env, message) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(message);
    try {
      loadConfig(env);
    } catch (error) {
      expect((error as Error).message).not.toContain('\n');
    }
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
    expect(message).toMatch(/WEBHOOK_URLS="https:\/\/\*\*\*@hooks.example\/in": entry 1 carries credentials/);
    expect(message).not.toContain('s3cret');
  });

  it('takes timeouts up to what a timer can wait, the shutdown deadline included', () => {
    expect(loadConfig({ WAIT_TIMEOUT_MS: String(MAX_TIMER_MS) }).payloads.waitTimeoutMs).toBe(MAX_TIMER_MS);
    // npm start's shutdown deadline is DRAIN_MS + WORKER_SHUTDOWN_TIMEOUT_MS + SHUTDOWN_GRACE_MS, one timer.
    const longest = MAX_TIMER_MS - DRAIN_MS - SHUTDOWN_GRACE_MS;
    expect(loadConfig({ WORKER_SHUTDOWN_TIMEOUT_MS: String(longest) }).workers.shutdownTimeoutMs).toBe(longest);
    expect(() => loadConfig({ WORKER_SHUTDOWN_TIMEOUT_MS: String(longest + 1) })).toThrow(ConfigError);
  });

  it('takes S3 endpoints with their scheme', () => {
    for (const endpoint of ['http://minio:9000', 'https://s3.example.com']) {
      const config = loadConfig({ STORES: 'docs:s3', S3_BUCKET: 'b', S3_ENDPOINT: endpoint });
      expect(storeConfig(config, { name: 'docs', kind: 's3' }).S3_ENDPOINT).toBe(endpoint);
    }
  });

  it('empty values count as unset', () => {
    expect(loadConfig({ PORT: '', STORES: '' }).port).toBe(3000);
  });
});
