/**
 * What only the s3 provider promises, against a real S3-compatible endpoint (test/support/s3.ts): multipart
 * bodies, presigned URLs, metadata other S3 clients can read, the circuit breaker across an outage, the reserved
 * `.kyozo/` prefix, and native bucket versioning where the endpoint has it. The contract suite covers the rest.
 */
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { CopyObjectCommand, DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutBucketVersioningCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { isBrokenCircuitError } from 'cockatiel';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, storeConfig } from '../../src/config.js';
import {
  InvalidArgumentError,
  InvalidKeyError,
  NotFoundError,
  PermissionDeniedError,
  PreconditionFailedError,
  ProviderUnavailableError,
  RangeNotSatisfiableError,
  StorageError,
} from '../../src/providers/errors.js';
import { createProvider } from '../../src/providers/index.js';
import { createS3Provider, type S3Provider, type S3ProviderOptions } from '../../src/providers/s3.js';
import { toStorageError } from '../../src/providers/s3-errors.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { s3ProviderOptions, startS3, startVersionedS3, type S3TestEndpoint } from '../support/s3.js';
import { allPages } from '../support/paging.js';

const MIB = 1024 * 1024;
const sha256 = (content: Uint8Array | string) => createHash('sha256').update(content).digest('hex');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function readBytes(provider: StorageProvider, key: string, opts?: Parameters<StorageProvider['read']>[1]): Promise<Buffer> {
  const { body } = await provider.read(key, opts);
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** `buffer` as a stream of 1 MiB chunks, like an upload arriving over HTTP. */
function streamOf(buffer: Buffer): Readable {
  return Readable.from(
    (function* () {
      for (let offset = 0; offset < buffer.length; offset += MIB) yield buffer.subarray(offset, offset + MIB);
    })(),
  );
}

// Started at collection time so `it.skipIf` can see what the endpoint supports.
const endpoint: S3TestEndpoint = await startS3();
/** The native-versioning tests' endpoint: this one if it has native versioning, else moto when installed. */
const versioned = await startVersionedS3(endpoint);
const bare: S3Client = endpoint.client();
const providers: S3Provider[] = [];

async function provider(overrides: Partial<S3ProviderOptions> = {}, bucketOptions?: { versioning?: boolean }, on = endpoint): Promise<S3Provider> {
  const bucket = overrides.bucket ?? (await on.createBucket(bucketOptions));
  const created = await createS3Provider(s3ProviderOptions(on, bucket, { ...overrides, bucket }));
  providers.push(created);
  return created;
}

beforeAll(() => {
  console.log(`s3 tests run against ${endpoint.kind} at ${endpoint.endpoint} (native versioning: ${endpoint.versioning ? 'yes' : 'no'})`);
});

afterAll(async () => {
  for (const created of providers) await created.close();
  bare.destroy();
  if (versioned.endpoint !== endpoint) await versioned.endpoint?.close();
  await endpoint.close();
});

describe('s3 provider: large bodies', () => {
  it('round-trips a 40 MiB stream byte-exact through a multipart upload, leaving no staged copy', async () => {
    const s3 = await provider();
    const content = randomBytes(40 * MIB);
    const info = await s3.write('big/40mib.bin', streamOf(content), { contentType: 'application/x-test', metadata: { part: 'yes' } });
    expect(info).toMatchObject({ size: content.length, etag: sha256(content), contentType: 'application/x-test' });

    const back = await readBytes(s3, 'big/40mib.bin');
    expect(back.length).toBe(content.length);
    expect(back.equals(content)).toBe(true);
    expect(await s3.stat('big/40mib.bin')).toMatchObject({ size: content.length, etag: sha256(content), metadata: { part: 'yes' } });

    const staged = await bare.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: '.kyozo/tmp/' }));
    expect(staged.Contents ?? []).toEqual([]);
  });

  it('sends a buffer larger than the multipart threshold as a staged multipart upload, fenced before its copy', async () => {
    const s3 = await provider({ multipartThreshold: 5 * MIB, partSize: 5 * MIB });
    const requests: string[] = [];
    (s3 as unknown as { client: S3Client }).client.middlewareStack.add(
      (next, context) => async (args) => {
        requests.push(String(context.commandName));
        return next(args);
      },
      { step: 'initialize', name: 'request-log' },
    );
    const content = randomBytes(11 * MIB + 7);
    const fence = async () => void requests.push('fence');
    const info = await s3.write('big/buffer.bin', content, { fence });
    expect(info.etag).toBe(sha256(content));
    expect((await readBytes(s3, 'big/buffer.bin')).equals(content)).toBe(true);
    // The fence comes after every part is up and right before the request that makes the object current.
    const landed = requests.filter((name) => name !== 'HeadObjectCommand' && name !== 'GetObjectCommand' && name !== 'DeleteObjectCommand');
    expect(landed.slice(-2)).toEqual(['fence', 'CopyObjectCommand']);
    expect(landed).toContain('CompleteMultipartUploadCommand');
  });

  it('an explicit restore checks its fence after copying the version and right before the copy that makes it current', async () => {
    const s3 = await provider({ versioning: 'explicit' });
    const v1 = await s3.createVersion('restored', 'old content', { message: 'one' });
    await s3.write('restored', 'current');
    const requests: string[] = [];
    s3.client.middlewareStack.add(
      (next, context) => async (args) => {
        requests.push(String(context.commandName));
        return next(args);
      },
      { step: 'initialize', name: 'request-log' },
    );
    await s3.restoreVersion('restored', v1.versionId, { fence: async () => void requests.push('fence') });
    // A run that lost its job during the first copy must not overwrite what the next run wrote meanwhile.
    const copies = requests.filter((name) => name === 'CopyObjectCommand' || name === 'fence');
    expect(copies).toEqual(['CopyObjectCommand', 'fence', 'CopyObjectCommand']);
    expect((await readBytes(s3, 'restored')).toString()).toBe('old content');
  });

  it('range reads return the slice and describe the whole object', async () => {
    const s3 = await provider();
    await s3.write('range.txt', '0123456789');
    const { info, body } = await s3.read('range.txt', { range: [3, 6] });
    const chunks: Buffer[] = [];
    for await (const chunk of body) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).toString()).toBe('3456');
    expect(info).toMatchObject({ size: 10, etag: sha256('0123456789') });
    await expect(s3.read('range.txt', { range: [10, 12] })).rejects.toBeInstanceOf(RangeNotSatisfiableError);
  });

  it('a range the endpoint answers wider (s3rver sends bytes=0-0 whole) is cut to the bytes asked for', async () => {
    const s3 = await provider();
    await s3.write('ranges.txt', '0123456789');
    for (const [start, end] of [[0, 0], [1, 1], [0, 1], [9, 9], [8, 100]] as const) {
      const { body } = await s3.read('ranges.txt', { range: [start, end] });
      const chunks: Buffer[] = [];
      for await (const chunk of body) chunks.push(chunk as Buffer);
      expect(Buffer.concat(chunks).toString(), `bytes ${start}-${end}`).toBe('0123456789'.slice(start, end + 1));
    }
  });

  it('a range of an empty object is not satisfiable (416), not an outage (s3rver answers 206 and sends nothing)', async () => {
    const s3 = await provider();
    await s3.write('empty.txt', '');
    await expect(s3.read('empty.txt', { range: [0, 0] })).rejects.toBeInstanceOf(RangeNotSatisfiableError);
  });
});

describe('s3 provider: presigned URLs', () => {
  it('a presigned GET serves the object to plain fetch', async () => {
    const s3 = await provider();
    await s3.write('shared/report.txt', 'quarterly numbers', { contentType: 'text/plain' });
    const url = await s3.presign('shared/report.txt', { method: 'GET', expiresIn: 60 });
    const response = await fetch(url);
    expect(response.status).toBe(200);
    expect(await response.text()).toBe('quarterly numbers');
  });

  it('a presigned PUT stores what plain fetch sends, and the provider adopts it with its sha256', async () => {
    const s3 = await provider();
    const url = await s3.presign('uploads/from-browser.bin', { method: 'PUT', expiresIn: 60 });
    const content = randomBytes(4096);
    const response = await fetch(url, { method: 'PUT', body: content, headers: { 'content-type': 'image/png' } });
    expect(response.status).toBe(200);

    expect(await s3.stat('uploads/from-browser.bin')).toMatchObject({ size: 4096, etag: sha256(content), contentType: 'image/png' });
    expect((await readBytes(s3, 'uploads/from-browser.bin')).equals(content)).toBe(true);
    const head = await bare.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: 'uploads/from-browser.bin' }));
    expect(head.Metadata?.['kyozo-sha256']).toBe(sha256(content));
  });

  it('an expired presigned URL is refused', async () => {
    const s3 = await provider();
    await s3.write('shared/soon-gone.txt', 'x');
    const url = await s3.presign('shared/soon-gone.txt', { method: 'GET', expiresIn: 1 });
    await sleep(2100); // SigV4 expiry has one-second resolution
    const response = await fetch(url);
    expect(response.status).toBe(403);
    expect(await response.text()).toMatch(/expired/i);
  });

  it('refuses expiries S3 cannot sign and keys under the reserved prefix', async () => {
    const s3 = await provider();
    await expect(s3.presign('a', { method: 'GET', expiresIn: 0 })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(s3.presign('a', { method: 'GET', expiresIn: 8 * 24 * 3600 })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(s3.presign('.kyozo/versions/x', { method: 'GET', expiresIn: 60 })).rejects.toBeInstanceOf(InvalidKeyError);
  });
});

describe('s3 provider: metadata', () => {
  it('content type and metadata are visible to a second, independent S3 client', async () => {
    const s3 = await provider();
    const info = await s3.write('meta/doc.txt', 'hello', {
      contentType: 'text/plain; charset=utf-8',
      metadata: { Owner: 'ada', note: 'grüße 100% ✓', padded: ' edge ' },
    });
    const other = endpoint.client();
    try {
      const head = await other.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: 'meta/doc.txt' }));
      expect(head.ContentType).toBe('text/plain; charset=utf-8');
      expect(head.Metadata?.owner).toBe('ada');
      expect(head.Metadata?.['kyozo-sha256']).toBe(info.etag);
      expect(decodeURIComponent(head.Metadata?.note ?? '')).toBe('grüße 100% ✓');
      const got = await other.send(new GetObjectCommand({ Bucket: s3.bucket, Key: 'meta/doc.txt' }));
      expect(await got.Body?.transformToString()).toBe('hello');
    } finally {
      other.destroy();
    }
    expect((await s3.stat('meta/doc.txt')).metadata).toEqual({ owner: 'ada', note: 'grüße 100% ✓', padded: ' edge ' });
  });

  it('an object written by another S3 client is read with the sha256 of its content', async () => {
    const s3 = await provider();
    await bare.send(new PutObjectCommand({ Bucket: s3.bucket, Key: 'foreign.txt', Body: 'from elsewhere', ContentType: 'text/plain', Metadata: { origin: 'cli' } }));
    const [listed] = (await s3.list()).items;
    expect(listed).toMatchObject({ key: 'foreign.txt', etag: sha256('from elsewhere'), contentType: 'text/plain', metadata: { origin: 'cli' } });
    expect((await readBytes(s3, 'foreign.txt')).toString()).toBe('from elsewhere');
  });

  it('refuses metadata names the provider reserves for itself', async () => {
    const s3 = await provider();
    await expect(s3.write('m', 'x', { metadata: { 'kyozo-sha256': 'forged' } })).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  it("refuses, before any request, metadata over S3's 2 KB once percent-encoded and joined by the store's own entries", async () => {
    const s3 = await provider();
    const calls = s3.policy.counters.calls;
    // Within the contract's 2 KiB as UTF-8 (1,201 bytes), three times that percent-encoded.
    await expect(s3.write('m', 'x', { metadata: { n: 'é'.repeat(600) } })).rejects.toThrow(/limit of 2048/);
    // Within the contract's 2 KiB, but not with kyozo-sha256 and kyozo-updated beside it.
    await expect(s3.write('m', 'x', { metadata: { n: 'v'.repeat(2047) } })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(s3.createVersion('m', 'x', { message: 'm'.repeat(4000), ifMatch: 'a'.repeat(64) })).rejects.toThrow(/limit of 2048/);
    expect(s3.policy.counters.calls).toBe(calls);
    const fits = { n: 'é'.repeat(300) };
    await s3.write('m', 'x', { metadata: fits });
    expect((await s3.stat('m')).metadata).toEqual(fits);
  });

  it('refuses a content type outside printable ASCII before sending anything, leaving the circuit alone', async () => {
    const s3 = await provider({ resilience: { breakAfter: 1 } });
    const calls = s3.policy.counters.calls;
    for (const contentType of ['text/plain; name="日本.txt"', 'text/plain; name="résumé.txt"']) {
      await expect(s3.write('ct', 'x', { contentType })).rejects.toBeInstanceOf(InvalidArgumentError);
      await expect(s3.createVersion('ct', 'x', { message: 'm', contentType })).rejects.toBeInstanceOf(InvalidArgumentError);
    }
    expect(s3.policy.counters.calls).toBe(calls);
    expect(s3.policy.state).toBe('closed');
  });
});

describe('s3 provider: layout', () => {
  it('keeps explicit versions under the reserved prefix, out of list, stats and reach of user keys', async () => {
    const s3 = await provider({ versioning: 'explicit' });
    await s3.write('-first', 'sorts before .kyozo/');
    await s3.createVersion('doc', 'v1', { message: 'one' });
    await s3.createVersion('doc', 'v2', { message: 'two' });
    await s3.write('zzz', 'sorts after');
    const raw = await bare.send(new ListObjectsV2Command({ Bucket: s3.bucket }));
    expect((raw.Contents ?? []).filter((object) => object.Key?.startsWith('.kyozo/versions/'))).toHaveLength(2);

    expect((await s3.list()).items.map((item) => item.key)).toEqual(['-first', 'doc', 'zzz']);
    const paged = (await allPages((cursor) => s3.list({ limit: 1, cursor }))).flat().map((item) => item.key);
    expect(paged).toEqual(['-first', 'doc', 'zzz']);
    expect(await s3.stats()).toMatchObject({ objects: 3, versions: 2 });
    await expect(s3.write('.kyozo/versions/forged', 'x')).rejects.toBeInstanceOf(InvalidKeyError);
    await expect(s3.read('.kyozo/tmp/x')).rejects.toBeInstanceOf(InvalidKeyError);
  });

  it("a key's versions never mix with those of a key below it", async () => {
    const s3 = await provider({ versioning: 'explicit' });
    await s3.createVersion('a', 'a1', { message: 'a' });
    await s3.createVersion('a/b', 'ab1', { message: 'a/b' });
    expect((await s3.listVersions('a')).items.map((version) => version.message)).toEqual(['a']);
    expect((await s3.listVersions('a/b')).items.map((version) => version.message)).toEqual(['a/b']);
  });

  it('S3_PREFIX keeps two stores apart in one bucket, each key at prefix + key', async () => {
    const bucket = await endpoint.createBucket();
    const one = await provider({ bucket, prefix: 'tenant-one' });
    const two = await provider({ bucket, prefix: 'tenant-two/' });
    await one.write('shared-name', 'one');
    await two.write('shared-name', 'two');
    expect((await readBytes(one, 'shared-name')).toString()).toBe('one');
    expect((await one.list()).items.map((item) => item.key)).toEqual(['shared-name']);
    const raw = await bare.send(new GetObjectCommand({ Bucket: bucket, Key: 'tenant-two/shared-name' }));
    expect(await raw.Body?.transformToString()).toBe('two');
  });
});

describe('s3 provider: conditional writes in one process', () => {
  // s3rver ignores S3's If-Match and If-None-Match: what holds here is the provider's own check, one key at a time.
  it('of eight writes with the same If-Match at once, one succeeds and the others are refused (412)', async () => {
    const s3 = await provider();
    const seed = await s3.write('counter', '0');
    const outcomes = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => s3.write('counter', `from ${i}`, { ifMatch: seed.etag })));
    const won = outcomes.filter((outcome) => outcome.status === 'fulfilled');
    expect(won).toHaveLength(1);
    for (const outcome of outcomes) if (outcome.status === 'rejected') expect(outcome.reason).toBeInstanceOf(PreconditionFailedError);
    expect((await s3.stat('counter')).etag).toBe((won[0] as PromiseFulfilledResult<{ etag: string }>).value.etag);
  });

  it('of eight create-only writes at once, one creates the object', async () => {
    const s3 = await provider();
    const outcomes = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => s3.write('fresh', `creator ${i}`, { ifNoneMatch: '*' })));
    expect(outcomes.filter((outcome) => outcome.status === 'fulfilled')).toHaveLength(1);
  });
});

describe('s3 provider: errors and health', () => {
  it('maps S3 answers to contract errors', () => {
    const answer = (Code: string, httpStatusCode: number) => Object.assign(new Error(Code), { name: Code, $metadata: { httpStatusCode } });
    expect(toStorageError(answer('NoSuchKey', 404), 'read')).toBeInstanceOf(NotFoundError);
    expect(toStorageError(answer('PreconditionFailed', 412), 'write')).toBeInstanceOf(PreconditionFailedError);
    expect(toStorageError(answer('AccessDenied', 403), 'read')).toBeInstanceOf(PermissionDeniedError);
    expect(toStorageError(answer('SlowDown', 503), 'write')).toBeInstanceOf(ProviderUnavailableError);
    expect(toStorageError(answer('InternalError', 500), 'write')).toBeInstanceOf(ProviderUnavailableError);
    expect(toStorageError(Object.assign(new Error('connect'), { code: 'ECONNREFUSED' }), 'read')).toBeInstanceOf(ProviderUnavailableError);
    const mapped = toStorageError(answer('AccessDenied', 403), 'read "x"') as StorageError;
    expect(mapped.cause).toBeInstanceOf(Error);
    expect(mapped.retryable).toBe(false);
  });

  it('calls unavailable only what the endpoint or the network did; other failures are not retried', () => {
    const network = Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
    expect(toStorageError(network, 'read')).toBeInstanceOf(ProviderUnavailableError);
    expect(toStorageError(Object.assign(new Error('late'), { name: 'TimeoutError' }), 'read')).toBeInstanceOf(ProviderUnavailableError);
    const unreadable = Object.assign(new Error('Expected closing tag'), { $metadata: { httpStatusCode: 200 } });
    expect(toStorageError(unreadable, 'list')).toBeInstanceOf(ProviderUnavailableError);
    const header = Object.assign(new TypeError('Invalid character in header content ["x-amz-meta-a"]'), { code: 'ERR_INVALID_CHAR' });
    expect(toStorageError(header, 'write')).toBeInstanceOf(InvalidArgumentError);
    const bug = new TypeError("Cannot read properties of undefined (reading 'length')");
    expect(toStorageError(bug, 'write')).toBe(bug);
  });

  it('a body stream that fails mid-upload fails the write with its own error, not retried nor counted against the endpoint', async () => {
    const s3 = await provider({ multipartThreshold: MIB, resilience: { breakAfter: 1 } });
    // What an HTTP request body says when its client goes away.
    const aborted = Object.assign(new Error('aborted'), { code: 'ECONNRESET' });
    let sent = 0;
    const body = new Readable({
      read() {
        if (sent >= 12 * MIB) return void this.destroy(aborted);
        sent += MIB;
        this.push(Buffer.alloc(MIB, 7));
      },
    });
    await expect(s3.write('big', body)).rejects.toBe(aborted);
    expect(s3.policy.state).toBe('closed');
    expect(s3.policy.counters.retries).toBe(0);
    await expect(s3.stat('big')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('wrong credentials are a permission error, not a missing object', async () => {
    const bucket = await endpoint.createBucket();
    const s3 = await provider({ bucket, credentials: { accessKeyId: 'nobody', secretAccessKey: 'wrong-secret' } });
    await expect(s3.stat('anything')).rejects.toBeInstanceOf(PermissionDeniedError);
    expect((await s3.health()).status).toBe('down');
  });

  it('a missing bucket makes stat and conditional writes unavailable, as reads and writes are, not "not found"', async () => {
    const s3 = await provider({ bucket: `kyozo-missing-${Date.now()}`, resilience: { retries: 0 } });
    await expect(s3.stat('doc')).rejects.toBeInstanceOf(ProviderUnavailableError);
    await expect(s3.stat('doc')).rejects.toThrow(/bucket .* does not exist/);
    await expect(s3.write('doc', 'x', { ifMatch: 'a'.repeat(64) })).rejects.toBeInstanceOf(ProviderUnavailableError);
    // With the bucket there, a missing object is still just that.
    const present = await provider();
    await expect(present.stat('doc')).rejects.toBeInstanceOf(NotFoundError);
    await expect(present.write('doc', 'x', { ifMatch: 'a'.repeat(64) })).rejects.toBeInstanceOf(PreconditionFailedError);
  });

  it('does not send a conditional write again after a late answer: unavailable, not a 412 against its own write', async () => {
    // An endpoint that applies the first PUT but answers it after the client's timeout (s3rver cannot be made slow).
    let current = { etag: '"e1"', sha256: 'a'.repeat(64) };
    const puts: string[] = [];
    const server = http.createServer((request, response) => {
      request.resume();
      request.on('end', () => {
        if (request.method === 'HEAD') {
          response.writeHead(200, { ETag: current.etag, 'Content-Length': '3', 'x-amz-meta-kyozo-sha256': current.sha256, 'Last-Modified': new Date().toUTCString() });
          return response.end();
        }
        puts.push(String(request.headers['if-match']));
        if (request.headers['if-match'] !== current.etag) {
          response.writeHead(412, { 'Content-Type': 'application/xml' });
          return response.end('<Error><Code>PreconditionFailed</Code><Message>no</Message></Error>');
        }
        current = { etag: `"e${puts.length + 1}"`, sha256: String(request.headers['x-amz-meta-kyozo-sha256']) };
        setTimeout(() => response.writeHead(200, { ETag: current.etag }).end(), 300);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const s3 = await createS3Provider({
      bucket: 'slow',
      endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      forcePathStyle: true,
      versioning: 'explicit',
      credentials: { accessKeyId: 'x', secretAccessKey: 'y' },
      checksum: 'WHEN_REQUIRED',
      resilience: { timeoutMs: 100, initialDelayMs: 5, maxDelayMs: 10 },
    });
    try {
      await expect(s3.write('k', 'new content', { ifMatch: 'a'.repeat(64) })).rejects.toBeInstanceOf(ProviderUnavailableError);
      expect(puts).toEqual(['"e1"']);
    } finally {
      await s3.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('an explicit version whose copy onto the key answered late is kept and returned: the key names it', async () => {
    const s3 = await provider({ versioning: 'explicit', resilience: { timeoutMs: 200, initialDelayMs: 5, maxDelayMs: 10 } });
    const first = await s3.createVersion('doc', 'v1', { message: 'one' });
    // The copy is applied by the endpoint, but its answer arrives after the policy's timeout.
    const send = s3.client.send.bind(s3.client) as (command: unknown, options?: unknown) => Promise<unknown>;
    let lateCopies = 1;
    (s3.client as { send: unknown }).send = async (command: unknown, options?: unknown) => {
      if (command instanceof CopyObjectCommand && lateCopies > 0) {
        lateCopies--;
        const out = await send(command);
        await sleep(400);
        return out;
      }
      return send(command, options);
    };
    const second = await s3.createVersion('doc', 'v2', { message: 'two', ifMatch: first.etag });
    expect((await s3.stat('doc')).versionId).toBe(second.versionId);
    expect((await readBytes(s3, 'doc', { versionId: second.versionId })).toString()).toBe('v2');
    expect((await s3.listVersions('doc')).items.map((version) => version.message)).toEqual(['two', 'one']);
  });

  it('reports its versioning mode in health and stats', async () => {
    const s3 = await provider();
    const mode = endpoint.versioning ? 'native' : 'explicit';
    const health = await s3.health();
    expect(health.status).toBe('ok');
    expect(health.detail).toContain(`versioning ${mode}`);
    expect((await s3.stats()).detail).toMatchObject({ versioning: mode, circuit: 'closed' });
  });

  it('an s3 store without S3_BUCKET fails with a message naming the setting', async () => {
    const config = loadConfig({ STORES: 'media:s3' });
    await expect(createProvider(storeConfig(config, { name: 'media', kind: 's3' }))).rejects.toThrow(ConfigError);
    await expect(createProvider(storeConfig(config, { name: 'media', kind: 's3' }))).rejects.toThrow(/MEDIA_S3_BUCKET/);
  });

  it('builds an s3 store from settings through the provider index', async () => {
    const bucket = await endpoint.createBucket();
    const env = {
      STORES: 'media:s3',
      MEDIA_S3_BUCKET: bucket,
      S3_ENDPOINT: endpoint.endpoint,
      S3_FORCE_PATH_STYLE: 'true',
      S3_CHECKSUM: endpoint.checksum,
      AWS_REGION: endpoint.region,
    };
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    process.env.AWS_ACCESS_KEY_ID = endpoint.credentials.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = endpoint.credentials.secretAccessKey;
    try {
      const config = loadConfig(env);
      const store = await createProvider(storeConfig(config, { name: 'media', kind: 's3' }));
      try {
        expect(store.kind).toBe('s3');
        await store.write('via-settings', 'ok');
        expect((await readBytes(store, 'via-settings')).toString()).toBe('ok');
      } finally {
        await store.close();
      }
    } finally {
      if (saved.id === undefined) delete process.env.AWS_ACCESS_KEY_ID;
      else process.env.AWS_ACCESS_KEY_ID = saved.id;
      if (saved.secret === undefined) delete process.env.AWS_SECRET_ACCESS_KEY;
      else process.env.AWS_SECRET_ACCESS_KEY = saved.secret;
    }
  });
});

describe('s3 provider: stalled bodies', () => {
  /**
   * A proxy to the endpoint that hands GET bodies over as `shape` says: the first bytes then nothing, slowly, or the
   * first bytes then a closed connection.
   */
  async function proxied(shape: 'stall' | 'trickle' | 'cut') {
    const upstream = new URL(endpoint.endpoint);
    const server = http.createServer((request, response) => {
      const forwarded = http.request(
        { host: upstream.hostname, port: upstream.port, path: request.url, method: request.method, headers: request.headers },
        async (answer) => {
          response.writeHead(answer.statusCode!, answer.headers);
          if (request.method !== 'GET' || answer.statusCode !== 200) return void answer.pipe(response);
          const body = Buffer.concat(await answer.toArray());
          if (shape === 'stall') return void response.write(body.subarray(0, 4));
          if (shape === 'cut') return void response.write(body.subarray(0, 50_000), () => response.destroy());
          for (let offset = 0; offset < body.length; offset += 10_000) {
            response.write(body.subarray(offset, offset + 10_000));
            await sleep(100);
          }
          response.end();
        },
      );
      request.pipe(forwarded);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const bucket = await endpoint.createBucket();
    const s3 = await provider({ bucket, endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, socketTimeoutMs: 300, versioning: 'explicit' });
    const close = async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    };
    return { s3, close };
  }

  it('a read whose body stalls mid-stream fails once the connection has been idle for socketTimeoutMs', async () => {
    const { s3, close } = await proxied('stall');
    try {
      await s3.write('k', Buffer.alloc(100_000, 1));
      const started = performance.now();
      await expect(readBytes(s3, 'k')).rejects.toThrow(/timed out/);
      expect(performance.now() - started).toBeLessThan(3_000);
    } finally {
      await close();
    }
  });

  it('a read whose body breaks off mid-way (its connection closed) fails as unavailable, retryable, not as a bare "aborted"', async () => {
    const { s3, close } = await proxied('cut');
    try {
      await s3.write('k', Buffer.alloc(100_000, 1));
      const failure = await readBytes(s3, 'k').catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(ProviderUnavailableError);
      expect((failure as Error).message).toMatch(/read "k": the body broke off/);
    } finally {
      await close();
    }
  });

  it('a read whose body keeps flowing is not cut, however long it takes in all', async () => {
    const { s3, close } = await proxied('trickle');
    try {
      const content = randomBytes(100_000);
      await s3.write('k', content);
      const started = performance.now();
      expect((await readBytes(s3, 'k')).equals(content)).toBe(true);
      expect(performance.now() - started).toBeGreaterThan(600);
    } finally {
      await close();
    }
  });

  it('a reader that pauses longer than socketTimeoutMs still gets the whole object: only S3 keeping it waiting counts', async () => {
    // 2 s: an S3 (s3rver) on a loaded machine may be slow now and then, but not that slow; the pause is well past it.
    const s3 = await provider({ socketTimeoutMs: 2000, versioning: 'explicit' });
    const content = randomBytes(12 * MIB); // more than the socket's buffers hold: S3 is held back while the reader pauses
    await s3.write('k', content);
    const { body } = await s3.read('k');
    const chunks: Buffer[] = [];
    for await (const chunk of body) {
      if (chunks.length === 0) await sleep(4_500); // the reader's own client stopped reading (backpressure)
      chunks.push(chunk as Buffer);
    }
    expect(Buffer.concat(chunks).equals(content)).toBe(true);
  });

  it("readers that stop taking data let their connections go after 10 × socketTimeoutMs: a pool's worth of them cannot stop every later read", async () => {
    const s3 = await provider({ socketTimeoutMs: 300, versioning: 'explicit', resilience: { timeoutMs: 3000, retries: 0 } });
    await s3.write('big', Buffer.alloc(8 * MIB, 1));
    const held: Readable[] = [];
    try {
      for (let i = 0; i < 50; i++) {
        // The SDK's pool holds 50 connections: each of these takes one chunk, then stops reading (a stalled client).
        const { body } = await s3.read('big');
        await new Promise<void>((resolve) => body.once('data', () => (body.pause(), resolve())));
        body.on('error', () => undefined);
        held.push(body);
      }
      await sleep(4_000); // past 10 × 300 ms of taking nothing
      expect(held.every((body) => body.destroyed)).toBe(true);
      const { body } = await s3.read('big'); // a connection is free again
      body.destroy();
    } finally {
      for (const body of held) body.destroy();
    }
  }, 60_000);

  it('a body let go of unread, its connection then closed, ends quietly: no uncaught "aborted" (as Node\'s own response)', async () => {
    const uncaught: unknown[] = [];
    const record = (error: unknown) => void uncaught.push(error);
    process.on('uncaughtException', record);
    try {
      for (let i = 0; i < 3; i++) {
        const s3 = await provider({ versioning: 'explicit' });
        await s3.write('let-go', Buffer.alloc(4 * MIB, 1)); // more than the socket's buffers: still arriving
        await s3.read('let-go'); // its body never read nor destroyed
        await s3.close(); // the connection closes under it
      }
      await sleep(500);
    } finally {
      process.off('uncaughtException', record);
    }
    expect(uncaught).toEqual([]);
  });
});

describe('s3 provider: outage', () => {
  if (!endpoint.canStop) console.log(`s3 outage test skipped: the ${endpoint.kind} endpoint cannot be stopped and restarted on the same address`);

  it.skipIf(!endpoint.canStop)('fails fast once the circuit is open, reports down, and serves again when the endpoint is back', async () => {
    const s3 = await provider({
      resilience: { timeoutMs: 2000, retries: 1, initialDelayMs: 10, maxDelayMs: 50, breakAfter: 3, halfOpenAfterMs: 300 },
    });
    await s3.write('outage/key', 'before');
    const states: string[] = [];
    const unsubscribe = s3.policy.onStateChange((state) => states.push(state));

    await endpoint.stop();
    try {
      for (let attempt = 0; attempt < 10 && s3.policy.state !== 'open'; attempt++) {
        await expect(s3.stat('outage/key')).rejects.toBeInstanceOf(ProviderUnavailableError);
      }
      expect(s3.policy.state).toBe('open');

      const before = s3.policy.counters.shortCircuited;
      const failure = await s3.read('outage/key').then(
        () => undefined,
        (error: unknown) => error,
      );
      expect(failure).toBeInstanceOf(ProviderUnavailableError);
      expect(isBrokenCircuitError((failure as Error).cause)).toBe(true);
      expect(s3.policy.counters.shortCircuited).toBe(before + 1);

      const health = await s3.health();
      expect(health.status).toBe('down');
      expect(health.detail).toMatch(/circuit/);
    } finally {
      await endpoint.start();
    }

    let recovered: string | undefined;
    for (let attempt = 0; attempt < 50 && recovered === undefined; attempt++) {
      recovered = await readBytes(s3, 'outage/key').then(
        (bytes) => bytes.toString(),
        async (error: unknown) => {
          expect(error).toBeInstanceOf(ProviderUnavailableError);
          await sleep(100);
          return undefined;
        },
      );
    }
    expect(recovered).toBe('before');
    expect(s3.policy.state).toBe('closed');
    expect((await s3.health()).status).toBe('ok');
    expect(states).toEqual(expect.arrayContaining(['open', 'half-open', 'closed']));
    unsubscribe();
  });
});

describe('s3 provider: native bucket versioning', () => {
  if (versioned.endpoint === undefined) console.log(`s3 native-versioning tests skipped: ${versioned.reason}`);
  else console.log(`s3 native-versioning tests run against ${versioned.endpoint.kind} at ${versioned.endpoint.endpoint}`);
  const hasNative = versioned.endpoint !== undefined;
  const versionedBare = versioned.endpoint?.client();
  afterAll(() => versionedBare?.destroy());

  const native = () => provider({}, { versioning: true }, versioned.endpoint);

  it.skipIf(!hasNative)('every write is a version with the S3 VersionId; createVersion adds message and author', async () => {
    const s3 = await native();
    expect(s3.capabilities.versioning).toBe('every-write');
    const first = await s3.write('doc', 'one');
    const second = await s3.createVersion('doc', 'two', { message: 'second', author: { name: 'Ada', email: 'ada@example.com' } });
    expect(first.versionId).toBeDefined();
    expect((await s3.stat('doc')).versionId).toBe(second.versionId);
    const { items } = await s3.listVersions('doc');
    expect(items.map((version) => version.versionId)).toEqual([second.versionId, first.versionId]);
    expect(items[0]).toMatchObject({ message: 'second', author: { name: 'Ada', email: 'ada@example.com' }, etag: sha256('two') });
    expect(items[1]?.message).toBeUndefined();
    const head = await versionedBare!.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: 'doc', VersionId: second.versionId }));
    expect(head.Metadata?.['kyozo-message']).toBe('second');
  });

  // A server that honours If-Match on PutObject (moto, AWS, MinIO) answers a write whose object was deleted after our
  // check with 404 NoSuchKey. (moto does not check it on CopyObject, the path of staged bodies.)
  it.skipIf(!hasNative)('a write or version whose If-Match object is deleted just before it lands fails its precondition (412), not 404', async () => {
    const s3 = await native();
    // Another process's delete, landing between the provider's check and its write.
    const deleteElsewhere = async () => void (await versionedBare!.send(new DeleteObjectCommand({ Bucket: s3.bucket, Key: 'doc' })));
    const first = await s3.write('doc', 'one');
    await expect(s3.write('doc', 'two', { ifMatch: first.etag, fence: deleteElsewhere })).rejects.toBeInstanceOf(PreconditionFailedError);
    const again = await s3.write('doc', 'one again');
    await expect(s3.createVersion('doc', 'three', { message: 'm', ifMatch: again.etag, fence: deleteElsewhere })).rejects.toBeInstanceOf(PreconditionFailedError);
  });

  it.skipIf(!hasNative)('reads an old version, restores it as a new one, and keeps versions across a plain delete', async () => {
    const s3 = await native();
    const v1 = await s3.createVersion('r', 'original', { message: 'one' });
    await s3.write('r', 'changed');
    expect((await readBytes(s3, 'r', { versionId: v1.versionId })).toString()).toBe('original');
    const restored = await s3.restoreVersion('r', v1.versionId);
    expect(restored).toMatchObject({ message: `restore ${v1.versionId}`, etag: sha256('original') });
    expect((await readBytes(s3, 'r')).toString()).toBe('original');
    await s3.delete('r');
    await expect(s3.stat('r')).rejects.toBeInstanceOf(NotFoundError);
    expect((await readBytes(s3, 'r', { versionId: v1.versionId })).toString()).toBe('original');
    await s3.delete('r', { allVersions: true });
    expect((await s3.listVersions('r')).items).toEqual([]);
  });

  it.skipIf(!hasNative)('pages versions newest first and never lists versions of a longer key', async () => {
    const s3 = await native();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await s3.createVersion('p', `rev ${i}`, { message: `rev ${i}` })).versionId);
    await s3.write('p/child', 'not a version of p');
    await s3.write('pp', 'not a version of p either');
    const seen = (await allPages((cursor) => s3.listVersions('p', { limit: 2, cursor }))).flat().map((version) => version.versionId);
    expect(seen).toEqual([...ids].reverse());
  });

  it.skipIf(!hasNative)("an object written before versioning was enabled is S3's version \"null\": listed, read, restored and deleted", async () => {
    const on = versioned.endpoint!;
    const bucket = await on.createBucket();
    await versionedBare!.send(new PutObjectCommand({ Bucket: bucket, Key: 'report', Body: 'from before versioning' }));
    await versionedBare!.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
    const s3 = await provider({ bucket }, undefined, on);
    await s3.write('report', 'after');
    expect((await s3.listVersions('report')).items.map((version) => version.versionId)).toContain('null');
    expect((await readBytes(s3, 'report', { versionId: 'null' })).toString()).toBe('from before versioning');
    expect((await s3.stat('report', { versionId: 'null' })).size).toBe('from before versioning'.length);
    await s3.restoreVersion('report', 'null');
    expect((await readBytes(s3, 'report')).toString()).toBe('from before versioning');
    await s3.deleteVersion('report', 'null');
    expect((await s3.listVersions('report')).items.map((version) => version.versionId)).not.toContain('null');
  });

  it.skipIf(!hasNative)('an unknown version id is not found', async () => {
    const s3 = await native();
    await s3.write('x', '1');
    await expect(s3.stat('x', { versionId: 'no-such-version' })).rejects.toBeInstanceOf(NotFoundError);
    await expect(s3.read('x', { versionId: 'no-such-version' })).rejects.toBeInstanceOf(NotFoundError);
  });
});
