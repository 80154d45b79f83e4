/**
 * The s3 provider against a real S3-compatible endpoint (test/support/s3.ts), on what a review found: versions made
 * at once in explicit mode become current in id order, `stats` counts only what `list` shows, S3 answers that say
 * "wrong endpoint" or "try again" are told apart from outages and refusals, copies that adopt or restore an object
 * keep its content headers, a delete with allVersions leaves no S3 version behind in explicit mode either, a native
 * versions cursor survives the deletion of the version it names, and a restore fits S3's 2 KB. Explicit mode is
 * forced, so these run the same on s3rver (no bucket versioning) and on endpoints that have it, except where native
 * versioning is the point (then on moto when the endpoint has none). Answers no S3 gives on demand (a 301, a 409
 * OperationAborted, a refused version listing) come from a proxy in front of it.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { HeadObjectCommand, ListObjectVersionsCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, describe, expect, it } from 'vitest';
import { InvalidArgumentError, MisconfiguredBackendError, NotFoundError, StorageError } from '../../src/providers/errors.js';
import { createS3Provider, type S3Provider } from '../../src/providers/s3.js';
import type { StorageProvider, VersionInfo } from '../../src/providers/types.js';
import { s3ProviderOptions, sharedS3, sharedVersionedS3 } from '../support/s3.js';

const endpoint = await sharedS3();
/** Natively versioned: the shared endpoint when it is, else moto when installed. */
const versioned = await sharedVersionedS3();
const bare: S3Client = endpoint.client();
const providers: S3Provider[] = [];

async function explicitProvider(): Promise<S3Provider> {
  const bucket = await endpoint.createBucket();
  const created = await createS3Provider(s3ProviderOptions(endpoint, bucket, { versioning: 'explicit' }));
  providers.push(created);
  return created;
}

const proxies: http.Server[] = [];

afterAll(async () => {
  for (const created of providers) await created.close();
  for (const proxy of proxies) {
    proxy.closeAllConnections();
    await new Promise((resolve) => proxy.close(resolve));
  }
  bare.destroy();
  await endpoint.close();
});

interface Fault {
  status: number;
  code: string;
  headers?: Record<string, string>;
}

/**
 * A proxy to the endpoint that answers a request with the S3 error `fault(request)` returns (no body to a HEAD, as S3
 * does), and forwards every other request. Returns its address and the requests it answered itself.
 */
async function faultyProxy(fault: (request: http.IncomingMessage) => Fault | undefined): Promise<{ url: string; faults: string[] }> {
  const upstream = new URL(endpoint.endpoint);
  const faults: string[] = [];
  const server = http.createServer((request, response) => {
    const answer = fault(request);
    if (answer === undefined) {
      const forwarded = http.request({ host: upstream.hostname, port: upstream.port, path: request.url, method: request.method, headers: request.headers }, (reply) => {
        response.writeHead(reply.statusCode!, reply.headers);
        reply.pipe(response);
      });
      return void request.pipe(forwarded);
    }
    faults.push(`${request.method} ${request.url}`);
    request.resume();
    request.on('end', () => {
      response.writeHead(answer.status, { 'Content-Type': 'application/xml', ...answer.headers });
      if (request.method === 'HEAD') return void response.end();
      response.end(`<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${answer.code}</Code><Message>injected by the test</Message></Error>`);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxies.push(server);
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, faults };
}

/** An explicit-mode provider on a fresh bucket, reached through `url`, with quick retries and a breaker that opens soon. */
async function providerThrough(url: string): Promise<S3Provider> {
  const bucket = await endpoint.createBucket();
  const created = await createS3Provider(
    s3ProviderOptions(endpoint, bucket, { endpoint: url, versioning: 'explicit', resilience: { retries: 3, breakAfter: 2, initialDelayMs: 5, maxDelayMs: 10 } }),
  );
  providers.push(created);
  return created;
}

async function failureOf(call: Promise<unknown>): Promise<StorageError> {
  const error = await call.then(
    () => undefined,
    (failure: unknown) => failure,
  );
  expect(error).toBeInstanceOf(StorageError);
  return error as StorageError;
}

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

describe('s3 answers that are neither an outage nor a refusal (session 12)', () => {
  it('a 301 PermanentRedirect (the bucket is in another region) fails at once as unavailable, naming the region, and leaves the circuit closed', async () => {
    const { url, faults } = await faultyProxy(() => ({ status: 301, code: 'PermanentRedirect', headers: { 'x-amz-bucket-region': 'eu-west-1' } }));
    const s3 = await providerThrough(url);
    // A PUT and a GET get the error in an XML body; a HEAD gets only the status and the region header.
    for (const call of [() => s3.write('doc', 'content'), () => s3.stat('doc'), () => s3.read('doc'), () => s3.write('doc', 'again')]) {
      const failure = await failureOf(call());
      // 503 to clients and a parked job (an operator mends AWS_REGION), but not retried in the call nor counted.
      expect(failure).toBeInstanceOf(MisconfiguredBackendError);
      expect(failure.code).toBe('PROVIDER_UNAVAILABLE');
      expect(failure.message).toMatch(/eu-west-1/);
      expect(failure.message).toMatch(/AWS_REGION/);
    }
    expect(faults).toHaveLength(4); // none sent again
    expect(s3.policy.state).toBe('closed');
    expect(s3.policy.counters.opened).toBe(0);
  });

  it('a 409 OperationAborted (a conflicting operation under way) is retried, and the write lands', async () => {
    let aborted = 0;
    const { url, faults } = await faultyProxy((request) =>
      request.method === 'PUT' && new URL(request.url!, url).pathname.endsWith('/doc') && aborted++ === 0 ? { status: 409, code: 'OperationAborted' } : undefined,
    );
    const s3 = await providerThrough(url);
    const info = await s3.write('doc', 'content');
    expect(faults).toHaveLength(1);
    expect(info.etag).toBe(createHash('sha256').update('content').digest('hex'));
    expect((await s3.stat('doc')).etag).toBe(info.etag);
    expect(s3.policy.counters.retries).toBe(1);
  });
});

/** What an uploader other than the store (a client with a presigned URL, another tool) may set on an object. */
const CONTENT_HEADERS = {
  'Content-Type': 'text/csv',
  'Cache-Control': 'public, max-age=3600',
  'Content-Disposition': 'attachment; filename="report.csv"',
  'Content-Encoding': 'gzip',
  'Content-Language': 'de',
  Expires: 'Wed, 21 Oct 2037 07:28:00 GMT',
};

/** The content headers `client` is served for `key`, shaped as CONTENT_HEADERS; its `kyozo-sha256` as `sha256`. */
async function servedHeaders(client: S3Client, bucket: string, key: string): Promise<Record<string, string | undefined>> {
  const out = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
  return {
    'Content-Type': out.ContentType,
    'Cache-Control': out.CacheControl,
    'Content-Disposition': out.ContentDisposition,
    'Content-Encoding': out.ContentEncoding,
    'Content-Language': out.ContentLanguage,
    Expires: out.Expires?.toUTCString(),
    sha256: out.Metadata?.['kyozo-sha256'],
  };
}

const gzipped = gzipSync('a,b\n1,2\n');
const gzippedSha256 = createHash('sha256').update(gzipped).digest('hex');

describe('s3 content headers of objects the store did not write (session 12)', () => {
  it('adoption (explicit mode) keeps Cache-Control, Content-Disposition, Content-Encoding, Content-Language and Expires', async () => {
    const s3 = await explicitProvider();
    // Uploaded through the store's own presigned PUT, by a client that sends the headers its readers are to get.
    const put = await s3.presign('report.csv', { method: 'PUT', expiresIn: 60 });
    expect((await fetch(put, { method: 'PUT', body: gzipped, headers: CONTENT_HEADERS })).status).toBe(200);
    expect(await servedHeaders(bare, s3.bucket, 'report.csv')).toEqual({ ...CONTENT_HEADERS, sha256: undefined });

    expect((await s3.stat('report.csv')).etag).toBe(gzippedSha256);
    // Adopted: copied onto itself with the hash, and served as it was uploaded.
    expect(await servedHeaders(bare, s3.bucket, 'report.csv')).toEqual({ ...CONTENT_HEADERS, sha256: gzippedSha256 });
  });

  it.skipIf(versioned.endpoint === undefined)('a native restore of such a version keeps them too', async () => {
    const on = versioned.endpoint!;
    const client = on.client();
    try {
      const bucket = await on.createBucket({ versioning: true });
      const s3 = await createS3Provider(s3ProviderOptions(on, bucket));
      providers.push(s3);
      expect(s3.versioning).toBe('native');
      // Written by another tool, with the headers its readers are to get.
      const uploaded = await client.send(
        new PutObjectCommand({
          Bucket: bucket,
          Key: 'report.csv',
          Body: gzipped,
          ContentType: CONTENT_HEADERS['Content-Type'],
          CacheControl: CONTENT_HEADERS['Cache-Control'],
          ContentDisposition: CONTENT_HEADERS['Content-Disposition'],
          ContentEncoding: CONTENT_HEADERS['Content-Encoding'],
          ContentLanguage: CONTENT_HEADERS['Content-Language'],
          Expires: new Date(CONTENT_HEADERS.Expires),
        }),
      );
      expect(await servedHeaders(client, bucket, 'report.csv')).toEqual({ ...CONTENT_HEADERS, sha256: undefined });
      await s3.write('report.csv', 'replaced by the store', { contentType: 'text/plain' });

      const restored = await s3.restoreVersion('report.csv', uploaded.VersionId!);
      expect(restored.etag).toBe(gzippedSha256);
      expect(await servedHeaders(client, bucket, 'report.csv')).toEqual({ ...CONTENT_HEADERS, sha256: gzippedSha256 });
    } finally {
      client.destroy();
    }
  });
});

/** An s3 provider on a fresh bucket of the natively versioned endpoint (`versioned`, which the caller checked is there). */
async function onVersionedBucket(overrides: Parameters<typeof s3ProviderOptions>[2] = {}): Promise<S3Provider> {
  const on = versioned.endpoint!;
  const bucket = await on.createBucket({ versioning: true });
  const created = await createS3Provider(s3ProviderOptions(on, bucket, overrides));
  providers.push(created);
  return created;
}

async function textOf(provider: StorageProvider, key: string): Promise<string> {
  const { body } = await provider.read(key);
  return Buffer.concat(await body.toArray()).toString();
}

const hasNative = versioned.endpoint !== undefined;

describe('s3 explicit mode on a bucket that keeps S3 versions', () => {
  if (!hasNative) console.log(`s3 explicit mode on a versioned bucket not covered: ${versioned.reason}`);

  // The mode is pinned here; AWS gets there too when GetBucketVersioning is refused, or with versioning suspended.
  it.skipIf(!hasNative)('delete with allVersions leaves nothing of the key readable by S3 version id, and keys below it alone', async () => {
    const s3 = await onVersionedBucket({ versioning: 'explicit' });
    await s3.createVersion('secret', 'v1 personal data', { message: 'first' });
    await s3.write('secret', 'v2 personal data');
    await s3.write('secret/kept', 'another key');
    await s3.delete('secret', { allVersions: true });
    await expect(s3.stat('secret')).rejects.toBeInstanceOf(NotFoundError);
    expect((await s3.listVersions('secret')).items).toEqual([]);

    const client = versioned.endpoint!.client();
    try {
      const left = await client.send(new ListObjectVersionsCommand({ Bucket: s3.bucket }));
      expect((left.Versions ?? []).map((version) => version.Key)).toEqual(['secret/kept']);
      expect(left.DeleteMarkers ?? []).toEqual([]);
    } finally {
      client.destroy();
    }
  });

  it('keys that may not list S3 versions still delete a key with its version objects, by key', async () => {
    const { url, faults } = await faultyProxy((request) =>
      new URL(request.url!, 'http://proxy').searchParams.has('versions') ? { status: 403, code: 'AccessDenied' } : undefined,
    );
    const s3 = await providerThrough(url);
    await s3.createVersion('doc', 'v1', { message: 'first' });
    await s3.delete('doc', { allVersions: true });
    expect(faults.length).toBeGreaterThan(0);
    await expect(s3.stat('doc')).rejects.toBeInstanceOf(NotFoundError);
    expect((await s3.listVersions('doc')).items).toEqual([]);
  });
});

describe('s3 native version cursors', () => {
  if (!hasNative) console.log(`s3 native version cursors not covered: ${versioned.reason}`);

  async function fourVersions(pauseAfterFirst = 0): Promise<{ s3: S3Provider; made: string[] }> {
    const s3 = await onVersionedBucket();
    const made: string[] = [];
    for (let i = 0; i < 4; i++) {
      made.push((await s3.createVersion('k', `v${i}`, { message: `m${i}` })).versionId);
      if (i === 0) await new Promise((resolve) => setTimeout(resolve, pauseAfterFirst));
    }
    return { s3, made };
  }

  it.skipIf(!hasNative)("the page after a cursor whose version was deleted meanwhile goes on with the versions older than it", async () => {
    const { s3, made } = await fourVersions();
    const first = await s3.listVersions('k', { limit: 2 });
    expect(first.items.map((version) => version.versionId)).toEqual([made[3], made[2]]);
    await s3.deleteVersion('k', made[2]!); // retention removes a version that is not the newest
    const next = await s3.listVersions('k', { limit: 2, cursor: first.cursor });
    expect(next.items.map((version) => version.versionId)).toEqual([made[1], made[0]]);
    expect(next.cursor).toBeUndefined();
  });

  it.skipIf(!hasNative)('with the version after it deleted too, it goes on with the versions S3 dates before it', async () => {
    // S3 lists times to the second: the oldest version a second apart from the others.
    const { s3, made } = await fourVersions(1_100);
    const first = await s3.listVersions('k', { limit: 2 });
    await s3.deleteVersion('k', made[2]!);
    await s3.deleteVersion('k', made[1]!);
    const next = await s3.listVersions('k', { limit: 2, cursor: first.cursor });
    expect(next.items.map((version) => version.versionId)).toEqual([made[0]]);
  });
});

describe("s3 restores within S3's 2 KB of metadata", () => {
  if (!hasNative) console.log(`s3 native restores within the metadata budget not covered: ${versioned.reason}`);

  it('explicit: a version made within the budget is restored, without the default message where it does not fit', async () => {
    const s3 = await explicitProvider();
    const note = 'n'.repeat(1860); // with the version's message, id and hash, a few bytes short of 2 KB
    const made = await s3.createVersion('k', 'old', { message: 'm', metadata: { note } });
    await s3.write('k', 'new');
    const restored = await s3.restoreVersion('k', made.versionId);
    expect(restored.message).toBeUndefined();
    expect(await textOf(s3, 'k')).toBe('old');
    expect(await s3.stat('k')).toMatchObject({ versionId: restored.versionId, metadata: { note } });
  });

  it("explicit: a message of the caller's that does not fit is refused", async () => {
    const s3 = await explicitProvider();
    const made = await s3.createVersion('k', 'old', { message: 'm', metadata: { note: 'n'.repeat(1860) } });
    await expect(s3.restoreVersion('k', made.versionId, { message: 'back to the version from before the rewrite of its introduction' })).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  it('explicit: where it fits, the default message names the version restored', async () => {
    const s3 = await explicitProvider();
    const made = await s3.createVersion('k', 'old', { message: 'm' });
    expect((await s3.restoreVersion('k', made.versionId)).message).toBe(`restore ${made.versionId}`);
  });

  it.skipIf(!hasNative)('native: a write within the budget is a version restoreVersion can restore', async () => {
    const s3 = await onVersionedBucket();
    const old = await s3.write('k', 'old', { metadata: { note: 'n'.repeat(1896) } }); // with its hash and time: 2013 bytes
    await s3.write('k', 'new');
    const restored = await s3.restoreVersion('k', old.versionId!);
    expect(restored.message).toBeUndefined();
    expect(await textOf(s3, 'k')).toBe('old');
  });
});
