/**
 * Two stores that would share data are refused at start (`createStores`), as a hybrid store's own tiers are: each
 * would read, overwrite and delete the other's objects and versions (session 11: two git stores on one
 * GIT_REPO_PATH each served the other's writes).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { closeStores, createStores } from '../../src/providers/index.js';

let root: string;

beforeAll(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'kyozo-store-locations-'));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const open = (env: Record<string, string>) => createStores(loadConfig({ STORAGE_ROOT_DIR: root, ...env }));

describe('stores that would share data', () => {
  it('refuses two git stores on one repository', async () => {
    await expect(open({ STORES: 'notes:git,drafts:git', GIT_REPO_PATH: path.join(root, 'shared.git') })).rejects.toThrow(
      /stores "notes" \(git repository .*shared\.git\) and "drafts" \(git repository .*shared\.git\) would share data/,
    );
  });

  it('refuses a disk store whose directory holds another store (a disk store named git, around the git stores)', async () => {
    await expect(open({ STORES: 'docs:git,git:disk' })).rejects.toThrow(/stores "docs" \(git repository .*\/git\/docs\) and "git" \(directory .*\/git\) would share data/);
  });

  it("refuses an s3 store on a hybrid store's cold bucket and prefix, or within it", async () => {
    await expect(open({ STORES: 'media:s3,hy:hybrid', S3_BUCKET: 'one' })).rejects.toThrow(/stores "media" \(s3 bucket "one" .* prefix ""\) and "hy" \(s3 bucket "one" .*\) would share data/);
    await expect(open({ STORES: 'hy:hybrid,media:s3', S3_BUCKET: 'one', HY_S3_PREFIX: 'hy/', MEDIA_S3_PREFIX: 'hy/media/' })).rejects.toThrow(/stores "hy" .* and "media" .* would share data/);
  });

  it("refuses a store whose settings' prefix is a hybrid tier's and so names its repository (media__backup, media--backup)", async () => {
    await expect(
      open({ STORES: 'media:hybrid,media__backup:git', HYBRID_BACKUP: 'git', MEDIA__BACKUP_GIT_REPO_PATH: path.join(root, 'backup.git'), S3_BUCKET: 'b' }),
    ).rejects.toThrow(/stores "media" \(git repository .*backup\.git\) and "media__backup" \(git repository .*backup\.git\) would share data/);
  });

  it('opens stores in places of their own: git stores on their default repositories, disk stores side by side', async () => {
    const stores = await open({ STORES: 'notes:git,drafts:git,files:disk,cache:ram,gitlike:disk' });
    try {
      expect([...stores.keys()]).toEqual(['notes', 'drafts', 'files', 'cache', 'gitlike']);
    } finally {
      await closeStores(stores);
    }
  });
});
