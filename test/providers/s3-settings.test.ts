/**
 * The s3 settings that decide where presigned URLs point (`S3_PUBLIC_ENDPOINT`) and how the versioning mode is
 * chosen (`S3_VERSIONING`, and `auto` when S3 does not answer at start), against the suite's S3 endpoint
 * (test/support/s3.ts) and, where "no request at all" is the point, a local server that only counts.
 */
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { CreateBucketCommand, DeleteBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig, storeConfig } from '../../src/config.js';
import { ProviderUnavailableError } from '../../src/providers/errors.js';
import { createProvider } from '../../src/providers/index.js';
import { createS3Provider, type S3Provider, type S3ProviderOptions } from '../../src/providers/s3.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { s3ProviderOptions, startS3, type S3TestEndpoint } from '../support/s3.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** Short waits, and a circuit that lets a trial call through soon after an outage. */
const QUICK = { timeoutMs: 2_000, initialDelayMs: 5, maxDelayMs: 10, halfOpenAfterMs: 50 };
const UNREACHABLE = 'http://127.0.0.1:1';

// Its own endpoint (not the shared one): the outage tests stop and start it.
const endpoint: S3TestEndpoint = await startS3();
const bare: S3Client = endpoint.client();
const opened: StorageProvider[] = [];
const cleanups: (() => Promise<void>)[] = [];

afterAll(async () => {
  for (const provider of opened) await provider.close();
  for (const cleanup of cleanups) await cleanup();
  bare.destroy();
  await endpoint.close();
});

async function s3(options: S3ProviderOptions): Promise<S3Provider> {
  const provider = await createS3Provider(options);
  opened.push(provider);
  return provider;
}

/** An s3 store built from the environment through the provider index, as the processes build theirs. */
async function storeFromEnv(env: Record<string, string>): Promise<StorageProvider> {
  const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
  process.env.AWS_ACCESS_KEY_ID = endpoint.credentials.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = endpoint.credentials.secretAccessKey;
  cleanups.push(async () => {
    process.env.AWS_ACCESS_KEY_ID = saved.id;
    process.env.AWS_SECRET_ACCESS_KEY = saved.secret;
  });
  const config = loadConfig({ STORES: 'docs:s3', S3_FORCE_PATH_STYLE: 'true', S3_CHECKSUM: endpoint.checksum, AWS_REGION: endpoint.region, ...env });
  const provider = await createProvider(storeConfig(config, { name: 'docs', kind: 's3' }));
  opened.push(provider);
  return provider;
}

/** A TCP port forwarded to `target` (host:port): the address clients outside a compose network would use. */
async function forward(target: string): Promise<string> {
  const { hostname, port } = new URL(target);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), hostname);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => socket.destroy());
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** An HTTP server that answers every request 503 and counts them. */
async function countingServer(): Promise<{ url: string; requests: () => number }> {
  let requests = 0;
  const server = http.createServer((request, response) => {
    requests++;
    request.resume();
    response.writeHead(503, { 'Content-Type': 'application/xml' }).end('<Error><Code>ServiceUnavailable</Code><Message>counting</Message></Error>');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests: () => requests };
}

describe('S3_PUBLIC_ENDPOINT', () => {
  it('presigned URLs name the public endpoint, and a GET and a PUT through it reach the store', async () => {
    const bucket = await endpoint.createBucket();
    const publicEndpoint = await forward(endpoint.endpoint);
    const store = await storeFromEnv({ S3_BUCKET: bucket, S3_ENDPOINT: endpoint.endpoint, DOCS_S3_PUBLIC_ENDPOINT: publicEndpoint });
    await store.write('shared/report.txt', 'quarterly numbers');

    const get = await store.presign!('shared/report.txt', { method: 'GET', expiresIn: 60 });
    expect(get.startsWith(`${publicEndpoint}/${bucket}/shared/report.txt?`)).toBe(true);
    const fetched = await fetch(get);
    expect(fetched.status).toBe(200);
    expect(await fetched.text()).toBe('quarterly numbers');

    const put = await store.presign!('uploads/from-outside.txt', { method: 'PUT', expiresIn: 60 });
    expect(new URL(put).origin).toBe(publicEndpoint);
    expect((await fetch(put, { method: 'PUT', body: 'sent from outside' })).status).toBe(200);
    expect((await store.stat('uploads/from-outside.txt')).size).toBe('sent from outside'.length);
  });

  it('without it presigned URLs name S3_ENDPOINT, as before', async () => {
    const bucket = await endpoint.createBucket();
    const store = await storeFromEnv({ S3_BUCKET: bucket, S3_ENDPOINT: endpoint.endpoint });
    const url = await store.presign!('a.txt', { method: 'GET', expiresIn: 60 });
    expect(url.startsWith(`${endpoint.endpoint}/${bucket}/a.txt?`)).toBe(true);
  });
});

describe('S3_VERSIONING', () => {
  it.each(['native', 'explicit'] as const)('%s is taken as given: no request is sent at start', async (mode) => {
    const server = await countingServer();
    const store = await storeFromEnv({ S3_BUCKET: 'any', S3_ENDPOINT: server.url, S3_VERSIONING: mode });
    expect((store as S3Provider).versioning).toBe(mode);
    expect(store.capabilities.versioning).toBe(mode === 'native' ? 'every-write' : 'explicit');
    expect(server.requests()).toBe(0);
  });

  it('auto with S3 unreachable at start picks no mode: calls fail as unavailable, naming S3_VERSIONING', async () => {
    const store = await s3({ ...s3ProviderOptions(endpoint, 'unreachable'), endpoint: UNREACHABLE, resilience: QUICK });
    expect(store.versioning).toBe('unknown');
    for (const call of [
      () => store.write('k', 'v'),
      () => store.createVersion('k', 'v', { message: 'm' }),
      () => store.read('k'),
      () => store.stat('k'),
      () => store.listVersions('k'),
      () => store.delete('k'),
      () => store.stats(),
    ]) {
      const failure = await call().then(
        () => undefined,
        (error: unknown) => error,
      );
      expect(failure).toBeInstanceOf(ProviderUnavailableError);
    }
    await expect(store.write('k', 'v')).rejects.toThrow(/S3_VERSIONING/);
    expect(store.versioning).toBe('unknown');
    const health = await store.health();
    expect(health.status).toBe('down');
    expect(health.detail).toContain('versioning unknown');
    // Signing is local: a presigned URL needs no mode and no answer.
    expect(await store.presign('k', { method: 'GET', expiresIn: 60 })).toContain('/unreachable/k?');
  });

  it('auto: credentials that cannot be loaded at start leave the mode unknown, not explicit; S3 decides it once they load', async () => {
    const bucket = await endpoint.createBucket();
    let loads = false; // the credential source (instance metadata, a container agent) does not answer yet
    const credentials = async () => {
      if (!loads) throw Object.assign(new Error('Could not load credentials from any providers'), { name: 'CredentialsProviderError' });
      return endpoint.credentials;
    };
    const store = await s3({ ...s3ProviderOptions(endpoint, bucket), credentials, resilience: QUICK });
    expect(store.versioning).toBe('unknown');
    await expect(store.stat('k')).rejects.toBeInstanceOf(ProviderUnavailableError);
    loads = true;
    await sleep(QUICK.halfOpenAfterMs * 2); // the failures opened the circuit: its trial call comes after this
    await store.write('k', 'v');
    expect(store.versioning).toBe(endpoint.versioning ? 'native' : 'explicit');
    expect((await store.health()).detail).not.toMatch(/credentials/i);
  });

  it.skipIf(!endpoint.canStop)('auto: a store started during an outage asks again once S3 is back, and then writes', async () => {
    const bucket = await endpoint.createBucket();
    const mode = endpoint.versioning ? 'native' : 'explicit';
    await endpoint.stop();
    let store: S3Provider;
    try {
      store = await s3({ ...s3ProviderOptions(endpoint, bucket), resilience: QUICK });
      expect(store.versioning).toBe('unknown');
      await expect(store.write('during', 'outage')).rejects.toBeInstanceOf(ProviderUnavailableError);
    } finally {
      await endpoint.start();
    }
    await sleep(100); // past the circuit's half-open delay
    await store.write('after', 'outage');
    expect(store.versioning).toBe(mode);
    await expect(store.stat('during')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect((await store.stat('after')).size).toBe('outage'.length);
  });

  it('auto: a bucket that does not exist yet leaves the mode unknown; health settles it once the bucket is there', async () => {
    const bucket = await endpoint.createBucket();
    await bare.send(new DeleteBucketCommand({ Bucket: bucket }));
    const store = await s3({ ...s3ProviderOptions(endpoint, bucket), resilience: QUICK });
    expect(store.versioning).toBe('unknown');
    await expect(store.write('k', 'v')).rejects.toBeInstanceOf(ProviderUnavailableError);

    await bare.send(new CreateBucketCommand({ Bucket: bucket }));
    await sleep(100); // past the circuit's half-open delay
    const health = await store.health();
    expect(health.status).toBe('ok');
    expect(store.versioning).toBe('explicit'); // a new bucket has no versioning
    expect(health.detail).toContain('versioning explicit');
    await store.write('k', 'v');
  });
});
