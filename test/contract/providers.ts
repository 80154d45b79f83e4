/**
 * The providers the contract suite runs against: one entry each. A new provider adds one line here and must pass
 * every case in contract.test.ts.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { DiskProvider } from '../../src/providers/disk.js';
import { GitProvider } from '../../src/providers/git.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { RamProvider } from '../../src/providers/ram.js';
import { s3ContractFixture, sharedS3, sharedVersionedS3 } from '../support/s3.js';
import { openTestHybrid } from '../providers/fixtures/hybrid-stores.js';

export interface ProviderFixture {
  name: string;
  create(): Promise<{ provider: StorageProvider; dispose(): Promise<void> }>;
}

/** Native bucket versioning (every write a version): on moto when the shared endpoint has none. */
const versioned = await sharedVersionedS3();
const main = await sharedS3();
if (versioned.endpoint === undefined) console.log(`contract suite: s3 with native versioning not covered: ${versioned.reason}`);
const nativeS3: ProviderFixture[] =
  versioned.endpoint === undefined
    ? []
    : [{ name: `s3 native versioning (${versioned.endpoint.kind})`, create: () => s3ContractFixture(versioned.endpoint, true) }];

export const fixtures: ProviderFixture[] = [
  { name: 'ram', create: async () => ({ provider: new RamProvider({ maxBytes: 256 * 1024 * 1024 }), dispose: async () => {} }) },
  {
    name: 'disk',
    create: async () => {
      const root = await mkdtemp(path.join(os.tmpdir(), 'kyozo-contract-disk-'));
      return { provider: new DiskProvider({ root, fsync: true }), dispose: () => rm(root, { recursive: true, force: true }) };
    },
  },
  { name: 's3', create: () => s3ContractFixture(main) },
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
