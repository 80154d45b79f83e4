/**
 * A body over STAGING_INLINE_MAX sent over HTTP while the staging store is down (its bucket missing, say) is answered
 * 503 PROVIDER_UNAVAILABLE with Retry-After. Before session 20 the first such request was 400 "the request body was
 * cut off: the client closed the connection": staging stopped reading the body it could not store, and the API took
 * the request it had ended itself for one the client had left.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/api/app.js';
import { listen, type HttpServer } from '../../src/api/server.js';
import { startWebServices, type WebServices } from '../../src/api/services.js';
import { loadConfig, type Config } from '../../src/config.js';
import { createStagingProvider } from '../../src/jobs/staging.js';
import { ProviderUnavailableError } from '../../src/providers/errors.js';
import { createStores } from '../../src/providers/index.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { closeRedis, createRedis } from '../../src/redis.js';
import { interceptMethod } from '../support/intercept.js';
import { deleteKeys, TEST_REDIS_URL, uniquePrefix } from '../support/redis.js';
import { quietLog } from '../support/service.js';

let root: string;
let config: Config;
let stores: Map<string, StorageProvider>;
let staging: StorageProvider;
let web: WebServices;
let server: HttpServer;

beforeAll(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'kyozo-staging-down-'));
  config = loadConfig({ REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: uniquePrefix('staging-down'), STORAGE_ROOT_DIR: root, STORES: 'files:disk' });
  stores = await createStores(config, { log: quietLog });
  staging = await createStagingProvider(config);
  // The staging store refuses at once, before reading the body (as S3 does for a bucket that is gone).
  const down = interceptMethod(staging, 'write', () => async () => {
    throw new ProviderUnavailableError('write "staging/…": NoSuchBucket (HTTP 404)');
  });
  web = await startWebServices({ config, log: quietLog, stores, stagingProvider: down });
  server = await listen(createApp(web.deps), config, quietLog);
}, 60_000);

afterAll(async () => {
  await server?.close();
  await web?.close();
  await staging?.close();
  for (const store of stores?.values() ?? []) await store.close();
  const cleaner = createRedis(config, 'worker');
  await deleteKeys(cleaner, config.queuePrefix).catch(() => undefined);
  await closeRedis(cleaner);
  await rm(root, { recursive: true, force: true });
});

describe('an upload while the staging store is down', () => {
  it('is 503 PROVIDER_UNAVAILABLE with Retry-After, the first one too, not a client error', async () => {
    for (let i = 0; i < 2; i++) {
      const response = await fetch(`${server.url}/v1/stores/files/objects/big-${i}.bin`, { method: 'PUT', body: Buffer.alloc(300 * 1024, 7) });
      const answer = (await response.json()) as { error?: { code: string } };
      expect({ status: response.status, code: answer.error?.code, retryAfter: response.headers.get('retry-after') !== null }).toEqual({
        status: 503,
        code: 'PROVIDER_UNAVAILABLE',
        retryAfter: true,
      });
    }
  });
});
