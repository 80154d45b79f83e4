/**
 * A hybrid store whose cold and backup tiers are both s3 (HYBRID_COLD=s3, HYBRID_BACKUP=s3): a restore of a version
 * whose metadata leaves S3 no room for the default message leaves it out in both tiers, as plain s3 does, instead of
 * failing in backup (retried as unavailable, for good).
 */
import { afterAll, beforeAll, it } from 'vitest';
import { createHybridProvider, type HybridProvider } from '../../src/providers/hybrid.js';
import { RamProvider } from '../../src/providers/ram.js';
import { createS3Provider } from '../../src/providers/s3.js';
import { closeRedis, type RedisConnection } from '../../src/redis.js';
import { connectRedis, deleteKeys, uniquePrefix } from '../support/redis.js';
import { s3ProviderOptions, sharedS3, type S3TestEndpoint } from '../support/s3.js';
import { expectRestoreWithoutRoomForMessage } from './fixtures/hybrid-calls.js';

let endpoint: S3TestEndpoint;
let buckets: string[];
let redis: RedisConnection;
let provider: HybridProvider;
const prefix = uniquePrefix('hybrid-s3-backup');

beforeAll(async () => {
  endpoint = await sharedS3();
  buckets = [await endpoint.createBucket(), await endpoint.createBucket()];
  redis = await connectRedis('worker');
  provider = await createHybridProvider({
    name: 'both-s3',
    accessThreshold: 5,
    hotTtlSeconds: 3600,
    hotMaxBytes: 1 << 20,
    hot: new RamProvider({ maxBytes: 4 << 20 }),
    cold: await createS3Provider(s3ProviderOptions(endpoint, buckets[0]!)),
    backup: await createS3Provider(s3ProviderOptions(endpoint, buckets[1]!)),
    redis,
    keyPrefix: prefix,
  });
});

afterAll(async () => {
  await provider?.close();
  await deleteKeys(redis, prefix).catch(() => undefined);
  for (const bucket of buckets ?? []) await endpoint.removeBucket(bucket).catch(() => undefined);
  await closeRedis(redis);
});

it("restores a version whose metadata fills S3's 2 KB in both s3 tiers, without the default message", async () => {
  await expectRestoreWithoutRoomForMessage(provider);
});
