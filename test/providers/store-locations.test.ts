/**
 * Two stores that would share data are refused at start (`createStores`), as a hybrid store's own tiers are: each
 * would read, overwrite and delete the other's objects and versions (session 11: two git stores on one
 * GIT_REPO_PATH each served the other's writes).
 */
import { mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
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
  it('refuses two git stores on one branch of one repository, also when one names it through a symbolic link', async () => {
    const repo = path.join(root, 'shared.git');
    await expect(open({ STORES: 'notes:git,drafts:git', GIT_REPO_PATH: repo })).rejects.toThrow(
      /stores "notes" \(git repository .*shared\.git branch main\) and "drafts" \(git repository .*shared\.git branch main\) would share data/,
    );
    await mkdir(repo, { recursive: true });
    await symlink(repo, path.join(root, 'link.git'));
    await expect(open({ STORES: 'notes:git,drafts:git', NOTES_GIT_REPO_PATH: repo, DRAFTS_GIT_REPO_PATH: path.join(root, 'link.git') })).rejects.toThrow(
      /stores "notes" .* and "drafts" .* would share data/,
    );
  });

  it('opens git stores on other branches of one repository: each reads and lists its own', async () => {
    const stores = await open({ STORES: 'notes:git,drafts:git', GIT_REPO_PATH: path.join(root, 'branches.git'), NOTES_GIT_BRANCH: 'notes', DRAFTS_GIT_BRANCH: 'drafts' });
    try {
      await stores.get('notes')!.write('only/notes', 'n');
      expect((await stores.get('drafts')!.list()).items).toEqual([]);
    } finally {
      await closeStores(stores);
    }
  });

  it("leaves an s3 store without a bucket to the provider's own error", async () => {
    await expect(open({ STORES: 'a:s3,b:s3' })).rejects.toThrow(/S3_BUCKET \(or A_S3_BUCKET\) is required/);
  });

  it('refuses a disk store whose directory holds another store (a disk store named git, around the git stores)', async () => {
    await expect(open({ STORES: 'docs:git,git:disk' })).rejects.toThrow(/stores "docs" \(git repository .*\/git\/docs branch main\) and "git" \(directory .*\/git\) would share data/);
  });

  it("refuses an s3 store on a hybrid store's cold bucket and prefix, or within it", async () => {
    await expect(open({ STORES: 'media:s3,hy:hybrid', S3_BUCKET: 'one' })).rejects.toThrow(/stores "media" \(s3 bucket "one" .* prefix ""\) and "hy" \(s3 bucket "one" .*\) would share data/);
    await expect(open({ STORES: 'hy:hybrid,media:s3', S3_BUCKET: 'one', HY_S3_PREFIX: 'hy/', MEDIA_S3_PREFIX: 'hy/media/' })).rejects.toThrow(/stores "hy" .* and "media" .* would share data/);
  });

  it("refuses a store whose settings' prefix is a hybrid tier's and so names its repository (media__backup, media--backup)", async () => {
    await expect(
      open({ STORES: 'media:hybrid,media__backup:git', HYBRID_BACKUP: 'git', MEDIA__BACKUP_GIT_REPO_PATH: path.join(root, 'backup.git'), S3_BUCKET: 'b' }),
    ).rejects.toThrow(/stores "media" \(git repository .*backup\.git branch main\) and "media__backup" \(git repository .*backup\.git branch main\) would share data/);
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
