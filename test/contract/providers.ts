/**
 * The providers the contract suite runs against: one entry each. A new provider adds one line here and must pass
 * every case in contract.test.ts.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { DiskProvider } from '../../src/providers/disk.js';
import { GitProvider } from '../../src/providers/git.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { RamProvider } from '../../src/providers/ram.js';
import { s3ContractFixture, sharedS3, sharedVersionedS3, type S3TestEndpoint } from '../support/s3.js';
import { openTestHybrid } from '../providers/fixtures/hybrid-stores.js';

export interface ProviderFixture {
  name: string;
  create(): Promise<{ provider: StorageProvider; dispose(): Promise<void> }>;
  /**
   * Why concurrent create-only writes (`ifNoneMatch: '*'`) of one key may not be exclusive here, if they may not:
   * the cases that race them skip with this reason printed. Absent: they always are.
   */
  createOnlyGap?(): Promise<string | undefined>;
}

const createOnlyGaps = new Map<S3TestEndpoint, Promise<string | undefined>>();

/**
 * The s3 provider's create-only writes are atomic only where the endpoint honours `If-None-Match: *` on PutObject
 * (s3rver ignores it): asked once per endpoint, with a second create-only put of a key that exists.
 */
function s3CreateOnly(endpoint: S3TestEndpoint): Promise<string | undefined> {
  let gap = createOnlyGaps.get(endpoint);
  if (gap !== undefined) return gap;
  gap = (async () => {
    const bucket = await endpoint.createBucket();
    const client = endpoint.client();
    try {
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: 'probe', Body: 'first' }));
      try {
        await client.send(new PutObjectCommand({ Bucket: bucket, Key: 'probe', Body: 'second', IfNoneMatch: '*' }));
      } catch (error) {
        if ((error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 412) return undefined;
        throw error;
      }
      return `the ${endpoint.kind} endpoint ignores If-None-Match on PutObject: the provider's HEAD check is best effort only`;
    } finally {
      client.destroy();
      await endpoint.removeBucket(bucket).catch(() => undefined);
    }
  })();
  createOnlyGaps.set(endpoint, gap);
  return gap;
}

/** Native bucket versioning (every write a version): on moto when the shared endpoint has none. */
const versioned = await sharedVersionedS3();
const main = await sharedS3();
if (versioned.endpoint === undefined) console.log(`contract suite: s3 with native versioning not covered: ${versioned.reason}`);
const nativeS3: ProviderFixture[] =
  versioned.endpoint === undefined
    ? []
    : [{ name: `s3 native versioning (${versioned.endpoint.kind})`, create: () => s3ContractFixture(versioned.endpoint, true), createOnlyGap: () => s3CreateOnly(versioned.endpoint!) }];

export const fixtures: ProviderFixture[] = [
  { name: 'ram', create: async () => ({ provider: new RamProvider({ maxBytes: 256 * 1024 * 1024 }), dispose: async () => {} }) },
  {
    name: 'disk',
    create: async () => {
      const root = await mkdtemp(path.join(os.tmpdir(), 'kyozo-contract-disk-'));
      return { provider: new DiskProvider({ root, fsync: true }), dispose: () => rm(root, { recursive: true, force: true }) };
    },
  },
  { name: 's3', create: () => s3ContractFixture(main), createOnlyGap: () => s3CreateOnly(main) },
  ...nativeS3,
  {
    name: 'git',
    create: async () => {
      const repoPath = await mkdtemp(path.join(os.tmpdir(), 'kyozo-contract-git-'));
      return { provider: await GitProvider.open({ repoPath }), dispose: () => rm(repoPath, { recursive: true, force: true }) };
    },
  },
  // ram hot, s3 cold, disk backup; a low threshold so that repeated reads in the suite are served hot too. Its
  // create-only writes are exclusive in one process whatever cold is: cold checks them under the hybrid's key lock.
  { name: 'hybrid', create: () => openTestHybrid({ accessThreshold: 2 }) },
];
