/**
 * The s3 provider against a real S3-compatible endpoint (test/support/s3.ts), on what a review found: versions made
 * at once in explicit mode become current in id order, `stats` counts only what `list` shows, S3 answers that say
 * "wrong endpoint" or "try again" are told apart from outages and refusals, and copies that adopt or restore an
 * object keep its content headers. Explicit mode is forced, so these run the same on s3rver (no bucket versioning)
 * and on endpoints that have it, except where native versioning is the point (then on moto when the endpoint has
 * none). Answers no S3 gives on demand (a 301, a 409 OperationAborted) come from a proxy in front of it.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { HeadObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, describe, expect, it } from 'vitest';
import { StorageError } from '../../src/providers/errors.js';
import { createS3Provider, type S3Provider } from '../../src/providers/s3.js';
import type { VersionInfo } from '../../src/providers/types.js';
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
  it('a 301 PermanentRedirect (the bucket is in another region) fails at once, naming the region, and leaves the circuit closed', async () => {
    const { url, faults } = await faultyProxy(() => ({ status: 301, code: 'PermanentRedirect', headers: { 'x-amz-bucket-region': 'eu-west-1' } }));
    const s3 = await providerThrough(url);
    // A PUT and a GET get the error in an XML body; a HEAD gets only the status and the region header.
    for (const call of [() => s3.write('doc', 'content'), () => s3.stat('doc'), () => s3.read('doc'), () => s3.write('doc', 'again')]) {
      const failure = await failureOf(call());
      expect(failure.retryable).toBe(false);
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
