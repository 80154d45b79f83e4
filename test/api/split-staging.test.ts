/**
 * Staging in a deployment whose web and worker processes share Redis and S3 but no filesystem (DESIGN §6: the
 * staging area is "disk by default, s3 in distributed deployments"). Before session 20 no setting chose s3: the web
 * process staged a body over STAGING_INLINE_MAX on its own disk, and the worker failed the job ("the staged body of
 * this job is gone"). Now `STAGING_KIND=s3` stages in the bucket `STAGING_S3_*` names, kept apart from every store.
 */
import { ListObjectVersionsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createStaging, createStagingProvider } from '../../src/jobs/staging.js';
import { createS3Provider } from '../../src/providers/s3.js';
import { createStores } from '../../src/providers/index.js';
import { s3ProviderOptions, s3ServiceEnv, startMoto, startS3, type S3TestEndpoint } from '../support/s3.js';
import { overrideEnv } from '../support/env.js';
import { uniquePrefix } from '../support/redis.js';
import { startTestService, type TestService } from '../support/service.js';

let restoreEnv: () => void = () => undefined;
const started: TestService[] = [];
let s3: S3TestEndpoint;
let bucket: string;
let env: Record<string, string>;

beforeAll(async () => {
  s3 = await startS3();
  // The SDK's default chain reads the keys from the process environment.
  restoreEnv = overrideEnv({ AWS_ACCESS_KEY_ID: s3.credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey });
  bucket = await s3.createBucket();
  env = {
    STORES: 'docs:s3',
    S3_VERSIONING: 'explicit',
    ...s3ServiceEnv(s3, bucket),
    S3_PREFIX: 'docs/',
    STAGING_KIND: 's3',
    STAGING_S3_PREFIX: 'staging-area/',
    QUEUE_PREFIX: uniquePrefix('split-staging'),
  };
}, 120_000);

afterAll(async () => {
  for (const service of started.reverse()) await service.close().catch(() => undefined);
  await s3?.close();
  restoreEnv();
});

describe('STAGING_KIND=s3', () => {
  it('a body over STAGING_INLINE_MAX sent to a web process is written by a worker with another disk, and its staged copy goes', async () => {
    // Each service gets a temporary STORAGE_ROOT_DIR of its own: two machines.
    const web = await startTestService('split-staging-web', env, { worker: false });
    started.push(web);
    const worker = await startTestService('split-staging-worker', env, { worker: true });
    started.push(worker);
    const body = Buffer.alloc(300 * 1024, 7);
    const response = await web.app.request('/v1/stores/docs/objects/big.bin?wait=true', { method: 'PUT', body });
    expect({ status: response.status, answer: await response.json() }).toMatchObject({ status: 200, answer: { size: body.length } });
    const read = await web.app.request('/v1/stores/docs/objects/big.bin');
    expect(Buffer.from(await read.arrayBuffer()).equals(body)).toBe(true);
    const staged = await s3.client().send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'staging-area/' }));
    expect(staged.KeyCount ?? 0).toBe(0);
  });

  it('is refused at start where the staging area would share a store\'s data', async () => {
    const config = loadConfig({ ...env, STAGING_S3_PREFIX: 'docs/uploads/', STORAGE_ROOT_DIR: '/tmp/kyozo-split-staging-refused' });
    await expect(createStores(config)).rejects.toThrow(/store "docs" \(s3 bucket .* prefix "docs\/"\) and the staging area \(.* prefix "docs\/uploads\/"\) would share data/);
  });

  it('without a bucket for it, says which setting is missing', async () => {
    const { S3_BUCKET: _bucket, ...withoutBucket } = env;
    const config = loadConfig({ ...withoutBucket, DOCS_S3_BUCKET: bucket, STORAGE_ROOT_DIR: '/tmp/kyozo-split-staging-missing' });
    await expect(createStagingProvider(config)).rejects.toThrow(/^the staging area \(STAGING_KIND=s3\): STAGING_S3_BUCKET \(or S3_BUCKET\) is required$/);
  });
});

const moto = await startMoto();
if (moto === undefined) console.log('staging in a natively versioned bucket not covered: moto_server is not installed');

describe.skipIf(moto === undefined)('staging in a natively versioned bucket', () => {
  afterAll(async () => await moto?.close());

  it('a released body leaves no version behind', async () => {
    const versionedBucket = await moto!.createBucket({ versioning: true });
    const provider = await createS3Provider(s3ProviderOptions(moto!, versionedBucket, { prefix: 'staging-area/' }));
    try {
      const staging = createStaging({ provider, inlineMax: 1024 });
      const ref = await staging.stageBody(Buffer.alloc(4096, 1));
      const versions = async () => (await moto!.client().send(new ListObjectVersionsCommand({ Bucket: versionedBucket }))).Versions?.length ?? 0;
      expect(await versions()).toBe(1);
      await staging.release(ref);
      const left = await moto!.client().send(new ListObjectVersionsCommand({ Bucket: versionedBucket }));
      expect({ versions: left.Versions?.length ?? 0, deleteMarkers: left.DeleteMarkers?.length ?? 0 }).toEqual({ versions: 0, deleteMarkers: 0 });
    } finally {
      await provider.close();
    }
  });
});
