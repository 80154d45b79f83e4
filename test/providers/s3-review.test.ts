/**
 * The s3 provider against a real S3-compatible endpoint (test/support/s3.ts), on what a review found: versions made
 * at once in explicit mode become current in id order, and `stats` counts only what `list` shows. Explicit mode is
 * forced, so these run the same on s3rver (no bucket versioning) and on endpoints that have it.
 */
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, describe, expect, it } from 'vitest';
import { createS3Provider, type S3Provider } from '../../src/providers/s3.js';
import type { VersionInfo } from '../../src/providers/types.js';
import { s3ProviderOptions, sharedS3 } from '../support/s3.js';

const endpoint = await sharedS3();
const bare: S3Client = endpoint.client();
const providers: S3Provider[] = [];

async function explicitProvider(): Promise<S3Provider> {
  const bucket = await endpoint.createBucket();
  const created = await createS3Provider(s3ProviderOptions(endpoint, bucket, { versioning: 'explicit' }));
  providers.push(created);
  return created;
}

afterAll(async () => {
  for (const created of providers) await created.close();
  bare.destroy();
  await endpoint.close();
});

/** Bodies of falling sizes: the versions minted first take longest to upload and copy, so they finish last. */
const falling = (count: number) => Array.from({ length: count }, (_, i) => Buffer.alloc(1 + (count - 1 - i) * 300_000, i));

async function expectNewestIsCurrent(s3: S3Provider, key: string): Promise<void> {
  const newest = (await s3.listVersions(key, { limit: 1 })).items[0]!;
  const current = await s3.stat(key);
  expect({ versionId: current.versionId, etag: current.etag }).toEqual({ versionId: newest.versionId, etag: newest.etag });
}

describe('s3 explicit versions made at once', () => {
  it('versions created at once of one key leave the newest listed version current', async () => {
    const s3 = await explicitProvider();
    for (let round = 0; round < 4; round++) {
      const key = `doc/${round}`;
      await Promise.all(falling(8).map((body, i) => s3.createVersion(key, body, { message: `v${i}` })));
      expect((await s3.listVersions(key)).items).toHaveLength(8);
      await expectNewestIsCurrent(s3, key);
    }
  });

  it('a restore overtaken by a version created after it stays a version and does not become current', async () => {
    const s3 = await explicitProvider();
    const source = await s3.createVersion('doc', 'source', { message: 'source' });
    // The restore's first request, the copy of its source, waits until a version created meanwhile is done: the
    // restore, minted first, would otherwise land last.
    let created: Promise<VersionInfo> | undefined;
    s3.client.middlewareStack.add(
      (next, context) => async (args) => {
        if (created === undefined && context.commandName === 'CopyObjectCommand') {
          created = s3.createVersion('doc', 'created meanwhile', { message: 'created meanwhile' });
          await created;
        }
        return next(args);
      },
      { step: 'initialize', name: 'overtake-restore' },
    );
    const restored = await s3.restoreVersion('doc', source.versionId);
    const listed = (await s3.listVersions('doc')).items.map((version) => version.versionId);
    expect(listed).toEqual([(await created!).versionId, restored.versionId, source.versionId]);
    await expectNewestIsCurrent(s3, 'doc');
  });
});

describe('s3 explicit versions with preconditions, made at once (session 11)', () => {
  it('of eight create-only versions of a new key, one succeeds; of eight If-Match on one etag, one does', async () => {
    const s3 = await explicitProvider();
    // Falling sizes: the later ones finish first, so a version minted earlier finds a later one already current.
    const settled = async (attempts: Promise<VersionInfo>[]) => {
      const results = await Promise.allSettled(attempts);
      return {
        made: results.filter((result) => result.status === 'fulfilled').length,
        refused: results.filter((result) => result.status === 'rejected' && (result.reason as { code?: string }).code === 'PRECONDITION_FAILED').length,
      };
    };
    const created = await settled(falling(8).map((body, i) => s3.createVersion('new', body, { message: `m${i}`, ifNoneMatch: '*' })));
    expect(created).toEqual({ made: 1, refused: 7 });
    expect((await s3.listVersions('new')).items).toHaveLength(1);
    await expectNewestIsCurrent(s3, 'new');

    const { etag } = await s3.stat('new');
    const matched = await settled(falling(8).map((body, i) => s3.createVersion('new', Buffer.concat([body, Buffer.from([i])]), { message: `n${i}`, ifMatch: etag })));
    expect(matched).toEqual({ made: 1, refused: 7 });
    expect((await s3.listVersions('new')).items).toHaveLength(2);
    await expectNewestIsCurrent(s3, 'new');
  }, 60_000);
});

describe('s3 stats', () => {
  it('counts only the objects list shows, not keys another tool wrote that no store key can take', async () => {
    const s3 = await explicitProvider();
    await s3.write('photos/cat.jpg', 'meow');
    await s3.createVersion('notes.txt', 'v1', { message: 'first' });
    for (const key of ['tab\tname', 'win\\path.txt']) {
      await bare.send(new PutObjectCommand({ Bucket: s3.bucket, Key: key, Body: Buffer.from('12345678') }));
    }
    const listed = (await s3.list()).items;
    expect(listed.map((item) => item.key)).toEqual(['notes.txt', 'photos/cat.jpg']);
    const stats = await s3.stats();
    expect({ objects: stats.objects, bytes: stats.bytes, versions: stats.versions }).toEqual({
      objects: listed.length,
      bytes: listed.reduce((sum, item) => sum + item.size, 0),
      versions: 1,
    });
  });

  it('stops counting past statsScanLimit and says so; a store within it is counted whole', async () => {
    const bucket = await endpoint.createBucket();
    const s3 = await createS3Provider(s3ProviderOptions(endpoint, bucket, { versioning: 'explicit', statsScanLimit: 1000 }));
    providers.push(s3);
    const keys = Array.from({ length: 1000 }, (_, i) => `k${String(i).padStart(4, '0')}`);
    for (let at = 0; at < keys.length; at += 50) {
      await Promise.all(keys.slice(at, at + 50).map((key) => bare.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: 'x' }))));
    }
    expect(await s3.stats()).toMatchObject({ objects: 1000, detail: { truncated: false } });
    await bare.send(new PutObjectCommand({ Bucket: bucket, Key: 'k1000', Body: 'x' }));
    expect(await s3.stats()).toMatchObject({ objects: 1000, detail: { truncated: true } });
  });
});
