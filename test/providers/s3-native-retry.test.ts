/**
 * In a natively versioned bucket every PutObject, CopyObject onto a key and DeleteObject adds a version or a delete
 * marker, so the s3 provider never sends one again blindly after an attempt whose answer was lost: it first looks
 * for the version that attempt may have made (`src/providers/s3-landed.ts`). Against a real endpoint
 * (test/support/s3.ts), with the client's `send` made to let one request through at once and hand its answer back
 * only after the policy's timeout, as a server that applied it but answered late would.
 *
 * Where the endpoint has native versioning (MinIO, AWS) the whole promise is checked: one call, one version. On
 * s3rver, which has none, native mode is forced on a plain bucket: the part that shows there is that no second
 * request is sent after the lost answer, and that a bucket that cannot be asked for versions leaves the outcome
 * unknown (unavailable) instead.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListObjectVersionsCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../../src/providers/body.js';
import { NotFoundError, ProviderUnavailableError } from '../../src/providers/errors.js';
import { createS3Provider, type S3Provider, type S3ProviderOptions } from '../../src/providers/s3.js';
import { s3ProviderOptions, startS3, startVersionedS3, type S3TestEndpoint } from '../support/s3.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** Per attempt; the late answers come well after it, the backoff between attempts is short. */
const resilience = { timeoutMs: 500, initialDelayMs: 5, maxDelayMs: 10 };
const LATE_MS = 1_000;

// Started at collection time so `it.skipIf` can see what the endpoint supports.
const endpoint: S3TestEndpoint = await startS3();
/** The versioned-bucket tests' endpoint: this one if it has native versioning, else moto when installed. */
const versioned = await startVersionedS3(endpoint);
const versionedBare: S3Client | undefined = versioned.endpoint?.client();
const providers: S3Provider[] = [];

async function provider(overrides: Partial<S3ProviderOptions> = {}, bucketOptions?: { versioning?: boolean }, on = endpoint): Promise<S3Provider> {
  const bucket = await on.createBucket(bucketOptions);
  const created = await createS3Provider(s3ProviderOptions(on, bucket, { resilience, ...overrides, bucket }));
  providers.push(created);
  return created;
}

type Command = PutObjectCommand | CopyObjectCommand | DeleteObjectCommand;
type CommandClass = typeof PutObjectCommand | typeof CopyObjectCommand | typeof DeleteObjectCommand;

/**
 * Every request the provider sends from now on, by command name. The first `kind` request for `key` is sent at once
 * (it lands) but its answer is lost: handed back only after LATE_MS, or with `cut` replaced by a reset connection
 * (a copy of a staged upload has no per-attempt timeout to miss). With `neverArrives`, one such request before it
 * fails as a reset connection without reaching the endpoint.
 */
function loseFirstAnswer(s3: S3Provider, kind: CommandClass, key: string, opts: { neverArrives?: boolean; cut?: boolean } = {}): string[] {
  const sent: string[] = [];
  const send = s3.client.send.bind(s3.client) as (command: unknown, options?: unknown) => Promise<unknown>;
  const reset = () => Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
  let unsent = opts.neverArrives ? 1 : 0;
  let late = 1;
  (s3.client as { send: unknown }).send = async (command: unknown, options?: unknown) => {
    const name = (command as object).constructor.name;
    const ours = command instanceof kind && (command as Command).input.Key === key;
    if (ours && unsent > 0) {
      unsent--;
      sent.push(`${name} (never arrived)`);
      throw reset();
    }
    sent.push(name);
    if (ours && late > 0) {
      late--;
      const out = await send(command);
      if (opts.cut) throw reset();
      await sleep(LATE_MS);
      return out;
    }
    return send(command, options);
  };
  return sent;
}

const count = (sent: string[], name: string) => sent.filter((entry) => entry === name).length;

async function deleteMarkers(s3: S3Provider, key: string): Promise<number> {
  const out = await versionedBare!.send(new ListObjectVersionsCommand({ Bucket: s3.bucket, Prefix: key }));
  return (out.DeleteMarkers ?? []).filter((marker) => marker.Key === key).length;
}

async function text(s3: S3Provider, key: string): Promise<string> {
  const { body } = await s3.read(key);
  return Buffer.concat(await body.toArray()).toString();
}

beforeAll(() => {
  console.log(`s3 native-retry tests run against ${endpoint.kind} at ${endpoint.endpoint} (native versioning: ${endpoint.versioning ? 'yes' : 'no'})`);
});

afterAll(async () => {
  for (const created of providers) await created.close();
  versionedBare?.destroy();
  if (versioned.endpoint !== endpoint) await versioned.endpoint?.close();
  await endpoint.close();
});

describe('s3 native versioning: a request whose answer was lost is found, not sent again', () => {
  if (versioned.endpoint === undefined) console.log(`s3 native-retry tests on a versioned bucket skipped: ${versioned.reason}`);
  else console.log(`s3 native-retry tests on a versioned bucket run against ${versioned.endpoint.kind} at ${versioned.endpoint.endpoint}`);
  const hasNative = versioned.endpoint !== undefined;

  const native = () => provider({}, { versioning: true }, versioned.endpoint);

  it.skipIf(!hasNative)('one createVersion whose PutObject answered late leaves one version, and returns it', async () => {
    const s3 = await native();
    expect(s3.versioning).toBe('native');
    const sent = loseFirstAnswer(s3, PutObjectCommand, 'doc');
    const made = await s3.createVersion('doc', 'release notes v1', { message: 'publish v1', author: { name: 'Ada' } });
    expect(count(sent, 'PutObjectCommand')).toBe(1);
    const { items } = await s3.listVersions('doc');
    expect(items.map((version) => version.versionId)).toEqual([made.versionId]);
    expect(items[0]).toMatchObject({ message: 'publish v1', author: { name: 'Ada' } });
  });

  it.skipIf(!hasNative)('one write whose PutObject answered late leaves one version, and returns its id', async () => {
    const s3 = await native();
    const sent = loseFirstAnswer(s3, PutObjectCommand, 'doc');
    const written = await s3.write('doc', 'one', { metadata: { owner: 'ada' } });
    expect(count(sent, 'PutObjectCommand')).toBe(1);
    expect((await s3.listVersions('doc')).items.map((version) => version.versionId)).toEqual([written.versionId]);
    expect((await s3.stat('doc')).versionId).toBe(written.versionId);
  });

  it.skipIf(!hasNative)('a request that never arrived is sent again, and the resend that answered late is then found', async () => {
    const s3 = await native();
    const sent = loseFirstAnswer(s3, PutObjectCommand, 'doc', { neverArrives: true });
    const written = await s3.write('doc', 'one');
    expect(sent.filter((entry) => entry.startsWith('PutObjectCommand'))).toEqual(['PutObjectCommand (never arrived)', 'PutObjectCommand']);
    expect((await s3.listVersions('doc')).items.map((version) => version.versionId)).toEqual([written.versionId]);
  });

  it.skipIf(!hasNative)('one delete whose DeleteObject answered late leaves one delete marker', async () => {
    const s3 = await native();
    await s3.write('doc', 'one');
    const sent = loseFirstAnswer(s3, DeleteObjectCommand, 'doc');
    await s3.delete('doc');
    expect(count(sent, 'DeleteObjectCommand')).toBe(1);
    expect(await deleteMarkers(s3, 'doc')).toBe(1);
    await expect(s3.stat('doc')).rejects.toBeInstanceOf(NotFoundError);
    expect((await s3.listVersions('doc')).items).toHaveLength(1);
  });

  it.skipIf(!hasNative)('one restore whose CopyObject answered late adds one version, and returns it', async () => {
    const s3 = await native();
    const v1 = await s3.createVersion('doc', 'original', { message: 'one' });
    await s3.write('doc', 'changed');
    const sent = loseFirstAnswer(s3, CopyObjectCommand, 'doc');
    const restored = await s3.restoreVersion('doc', v1.versionId);
    expect(count(sent, 'CopyObjectCommand')).toBe(1);
    const ids = (await s3.listVersions('doc')).items.map((version) => version.versionId);
    expect(ids).toHaveLength(3);
    expect(ids[0]).toBe(restored.versionId);
    expect(await text(s3, 'doc')).toBe('original');
  });

  it.skipIf(!hasNative)('a staged write whose copy into place lost its connection after landing leaves one version', async () => {
    const s3 = await provider({ multipartThreshold: 1024 }, { versioning: true }, versioned.endpoint);
    const sent = loseFirstAnswer(s3, CopyObjectCommand, 'big', { cut: true });
    const written = await s3.write('big', Buffer.alloc(4096, 7));
    expect(count(sent, 'CopyObjectCommand')).toBe(1);
    expect((await s3.listVersions('big')).items.map((version) => version.versionId)).toEqual([written.versionId]);
  });
});

describe('s3 native mode without a versioned bucket to ask: a lost answer is never followed by a blind resend', () => {
  const reason = 'the endpoint has native bucket versioning: the tests on a versioned bucket above cover this and more';
  if (endpoint.versioning) console.log(`s3 native-retry tests with native mode forced skipped: ${reason}`);

  // Native mode forced on a bucket that cannot list versions (s3rver answers ListObjectVersions with 405).
  const forced = (overrides: Partial<S3ProviderOptions> = {}) => provider({ versioning: 'native', ...overrides });

  it.skipIf(endpoint.versioning)('a write whose PutObject answered late is looked for, not sent again: outcome unknown', async () => {
    const s3 = await forced();
    const sent = loseFirstAnswer(s3, PutObjectCommand, 'doc');
    await expect(s3.write('doc', 'one')).rejects.toBeInstanceOf(ProviderUnavailableError);
    expect(sent).toEqual(['PutObjectCommand', 'ListObjectVersionsCommand']);
    expect(await text(s3, 'doc')).toBe('one'); // it had landed
  });

  it.skipIf(endpoint.versioning)('a createVersion whose PutObject answered late is looked for, not sent again', async () => {
    const s3 = await forced();
    const sent = loseFirstAnswer(s3, PutObjectCommand, 'doc');
    await expect(s3.createVersion('doc', 'one', { message: 'first' })).rejects.toBeInstanceOf(ProviderUnavailableError);
    expect(sent).toEqual(['PutObjectCommand', 'ListObjectVersionsCommand']);
  });

  it.skipIf(endpoint.versioning)('a delete whose DeleteObject answered late is looked for, not sent again', async () => {
    const s3 = await forced();
    await s3.write('doc', 'one');
    const sent = loseFirstAnswer(s3, DeleteObjectCommand, 'doc');
    await expect(s3.delete('doc')).rejects.toBeInstanceOf(ProviderUnavailableError);
    expect(sent).toEqual(['HeadObjectCommand', 'DeleteObjectCommand', 'ListObjectVersionsCommand']);
    await expect(s3.stat('doc')).rejects.toBeInstanceOf(NotFoundError);
  });

  it.skipIf(endpoint.versioning)('a staged write whose copy into place lost its connection after landing is looked for, not copied again', async () => {
    const s3 = await forced({ multipartThreshold: 1024 });
    const sent = loseFirstAnswer(s3, CopyObjectCommand, 'big', { cut: true });
    await expect(s3.write('big', Buffer.alloc(4096, 7))).rejects.toBeInstanceOf(ProviderUnavailableError);
    expect(count(sent, 'CopyObjectCommand')).toBe(1);
    expect(sent.slice(sent.indexOf('CopyObjectCommand'))).toEqual(['CopyObjectCommand', 'ListObjectVersionsCommand', 'DeleteObjectCommand']);
    expect((await s3.stat('big')).size).toBe(4096);
  });
});

describe('s3 versioning mode asked while the answer is a passing 403 (session 10)', () => {
  const hasNative = versioned.endpoint !== undefined;

  it.skipIf(!hasNative)('a clock-skew 403 at start leaves the mode unknown and asked again: native, not explicit for good', async () => {
    const on = versioned.endpoint!;
    const target = new URL(on.endpoint);
    let skewed = 1;
    // In front of the endpoint: the first GetBucketVersioning is answered as S3 answers a request from a skewed clock.
    const proxy = http.createServer((request, response) => {
      if (skewed > 0 && request.method === 'GET' && request.url?.includes('versioning')) {
        skewed--;
        response.writeHead(403, { 'content-type': 'application/xml' });
        response.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>RequestTimeTooSkewed</Code><Message>skewed</Message></Error>');
        return;
      }
      const upstream = http.request({ host: target.hostname, port: target.port, method: request.method, path: request.url, headers: request.headers }, (answer) => {
        response.writeHead(answer.statusCode!, answer.headers);
        answer.pipe(response);
      });
      request.pipe(upstream);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    try {
      const bucket = await on.createBucket({ versioning: true });
      const via = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
      const s3 = await createS3Provider(s3ProviderOptions({ ...on, endpoint: via }, bucket, { resilience }));
      providers.push(s3);
      expect(s3.versioning).toBe('unknown');
      const made = await s3.createVersion('doc', 'v1', { message: 'made after the skew' });
      expect(s3.versioning).toBe('native');
      const keys = (await versionedBare!.send(new ListObjectsV2Command({ Bucket: bucket }))).Contents?.map((item) => item.Key);
      expect(keys).toEqual(['doc']); // no explicit version objects under .kyozo/
      expect((await s3.listVersions('doc')).items[0]).toMatchObject({ versionId: made.versionId, message: 'made after the skew' });
    } finally {
      proxy.close();
    }
  });
});

describe('objects written without our hash (another tool, a presigned PUT) (session 10)', () => {
  const hasNative = versioned.endpoint !== undefined;
  const MIB = 1024 * 1024;

  it.skipIf(!hasNative)('a write with ifMatch over one uploaded in parts succeeds, in either versioning mode', async () => {
    for (const versioning of [false, true]) {
      const s3 = await provider({}, { versioning }, versioned.endpoint);
      const content = Buffer.alloc(11 * MIB, versioning ? 1 : 2);
      // As `aws s3 cp` sends a large file: a multipart upload, so S3's ETag is no MD5, and no kyozo-sha256.
      await new Upload({ client: versionedBare!, params: { Bucket: s3.bucket, Key: 'by-cli', Body: content }, partSize: 5 * MIB }).done();
      const written = await s3.write('by-cli', 'replacement', { ifMatch: sha256Hex(content) });
      expect(written.etag, `versioning ${versioning}`).toBe(sha256Hex('replacement'));
      await s3.write('by-cli', 'again', { ifMatch: '*' });
      expect((await s3.stat('by-cli')).etag).toBe(sha256Hex('again'));
    }
  });

  it.skipIf(!hasNative)('in explicit mode one checked by an ifMatch write is still adopted by the next read', async () => {
    const s3 = await provider({}, { versioning: false }, versioned.endpoint);
    await versionedBare!.send(new PutObjectCommand({ Bucket: s3.bucket, Key: 'doc', Body: 'by another tool' }));
    await expect(s3.write('doc', 'new', { ifMatch: 'a'.repeat(64) })).rejects.toMatchObject({ code: 'PRECONDITION_FAILED' });
    await s3.stat('doc');
    const head = await versionedBare!.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: 'doc' }));
    expect(head.Metadata?.['kyozo-sha256']).toBe(sha256Hex('by another tool'));
  });

  it.skipIf(!hasNative)('a hash is kept only for what was read: one that changed between its look and its read is not', async () => {
    const s3 = await provider({}, { versioning: true }, versioned.endpoint);
    const first = (await versionedBare!.send(new PutObjectCommand({ Bucket: s3.bucket, Key: 'doc', Body: 'content A' }))).VersionId;
    // Another tool writes B between the provider's look at the object and its read of it.
    const send = s3.client.send.bind(s3.client) as (command: unknown, options?: unknown) => Promise<unknown>;
    let raced = false;
    (s3.client as { send: unknown }).send = async (command: unknown, options?: unknown) => {
      if (!raced && command instanceof GetObjectCommand && command.input.Key === 'doc') {
        raced = true;
        await versionedBare!.send(new PutObjectCommand({ Bucket: s3.bucket, Key: 'doc', Body: 'content B' }));
      }
      return send(command, options);
    };
    await s3.stat('doc');
    (s3.client as { send: unknown }).send = send;
    const listed = (await s3.listVersions('doc')).items.find((version) => version.versionId === first);
    expect(listed?.etag).toBe(sha256Hex('content A'));
    expect((await s3.stat('doc', { versionId: first })).etag).toBe(sha256Hex('content A'));
  });

  it.skipIf(!hasNative)('in a versioned bucket, reading one adds no version and its version id stays the same', async () => {
    const s3 = await provider({}, { versioning: true }, versioned.endpoint);
    const url = await s3.presign!('upload.txt', { method: 'PUT', expiresIn: 60 });
    expect((await fetch(url, { method: 'PUT', body: 'uploaded once' })).status).toBe(200);
    const first = await s3.stat('upload.txt');
    const second = await s3.stat('upload.txt');
    expect(first.etag).toBe(sha256Hex('uploaded once'));
    expect(second.versionId).toBe(first.versionId);
    expect((await s3.listVersions('upload.txt')).items.map((version) => version.versionId)).toEqual([first.versionId]);
  });
});

describe('s3 leftovers of interrupted uploads (session 10)', () => {
  const hasNative = versioned.endpoint !== undefined;

  it.skipIf(!hasNative)('removeLeftovers aborts old multipart uploads and deletes old staged objects under .kyozo/tmp/, nothing else', async () => {
    for (const versioning of [false, true]) {
      const s3 = await provider({}, { versioning }, versioned.endpoint);
      await s3.write('kept', 'a user object');
      // What a worker killed mid-upload leaves: an upload never completed, and a staged object never removed.
      await versionedBare!.send(new CreateMultipartUploadCommand({ Bucket: s3.bucket, Key: '.kyozo/tmp/killed-mid-upload' }));
      await versionedBare!.send(new PutObjectCommand({ Bucket: s3.bucket, Key: '.kyozo/tmp/copied-not-removed', Body: 'staged' }));
      // Nothing is an hour old: the staged object stays. (moto dates every multipart upload 2010-11-10, so it may go.)
      const early = await s3.removeLeftovers(3_600_000);
      const staged = await versionedBare!.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: '.kyozo/tmp/copied' }));
      expect(staged.Contents?.map((item) => item.Key), `versioning ${versioning}`).toEqual(['.kyozo/tmp/copied-not-removed']);
      expect(early + (await s3.removeLeftovers(0))).toBe(2);
      expect((await versionedBare!.send(new ListMultipartUploadsCommand({ Bucket: s3.bucket }))).Uploads ?? []).toEqual([]);
      const left = await versionedBare!.send(new ListObjectVersionsCommand({ Bucket: s3.bucket, Prefix: '.kyozo/tmp/' }));
      expect([...(left.Versions ?? []), ...(left.DeleteMarkers ?? [])]).toEqual([]);
      expect((await s3.stat('kept')).etag).toBe(sha256Hex('a user object'));
    }
  });
});
