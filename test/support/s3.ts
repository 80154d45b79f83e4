/**
 * A real S3-compatible endpoint for tests (DESIGN §9), first of:
 * 1. `S3_TEST_ENDPOINT` (+ `S3_TEST_ACCESS_KEY_ID`/`S3_TEST_SECRET_ACCESS_KEY`, else `AWS_ACCESS_KEY_ID`/
 *    `AWS_SECRET_ACCESS_KEY`; `S3_TEST_REGION`, else `AWS_REGION`, else us-east-1): a MinIO you run, or a real bucket
 *    account. Tests create their own buckets there (`kyozo-test-...`) and empty and remove them at the end.
 * 2. MinIO through testcontainers when a Docker engine answers (probed in under a second; testcontainers 11 is
 *    imported only then, so machines without Docker never load it).
 * 3. s3rver in a child process on a free port with a temp directory (see s3rver-process.mjs for why a child).
 *
 * `versioning` says whether the endpoint has native bucket versioning (MinIO and AWS do, s3rver does not).
 * `stop()`/`start()` take the endpoint away and bring it back on the same address, for outage tests; an
 * external endpoint cannot be stopped (`canStop` false).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  GetBucketVersioningCommand,
  ListObjectVersionsCommand,
  ListObjectsV2Command,
  PutBucketVersioningCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { freePort } from '../../src/embedded-redis.js';
import { dockerAnswers } from './docker.js';
import { createS3Provider, type S3Provider, type S3ProviderOptions } from '../../src/providers/s3.js';

export interface S3TestEndpoint {
  kind: 'external' | 'minio' | 's3rver' | 'moto';
  endpoint: string;
  region: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
  /** s3rver stores aws-chunked framing verbatim unless checksums are only sent when required. */
  checksum: 'WHEN_SUPPORTED' | 'WHEN_REQUIRED';
  /** Native bucket versioning is available. */
  versioning: boolean;
  canStop: boolean;
  /** A bare SDK client on this endpoint (same settings the provider gets). */
  client(): S3Client;
  /** Creates a fresh bucket (removed by `close()`); with `versioning`, enables native versioning on it. */
  createBucket(options?: { versioning?: boolean }): Promise<string>;
  /** Empties and removes one bucket now (a disposable endpoint just forgets it). */
  removeBucket(name: string): Promise<void>;
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Empties and removes the buckets it created, stops what it started. */
  close(): Promise<void>;
}

const MINIO_USER = 'kyozo-test';
const MINIO_PASSWORD = 'kyozo-test-secret';

export async function startS3(): Promise<S3TestEndpoint> {
  const external = process.env.S3_TEST_ENDPOINT;
  if (external) {
    const accessKeyId = process.env.S3_TEST_ACCESS_KEY_ID ?? process.env.AWS_ACCESS_KEY_ID;
    const secretAccessKey = process.env.S3_TEST_SECRET_ACCESS_KEY ?? process.env.AWS_SECRET_ACCESS_KEY;
    if (!accessKeyId || !secretAccessKey) {
      throw new Error('S3_TEST_ENDPOINT is set: set S3_TEST_ACCESS_KEY_ID and S3_TEST_SECRET_ACCESS_KEY (or the AWS_ ones) too');
    }
    const region = process.env.S3_TEST_REGION ?? process.env.AWS_REGION ?? 'us-east-1';
    return endpointFor('external', external, region, { accessKeyId, secretAccessKey }, 'WHEN_SUPPORTED', {
      canStop: false,
      stop: async () => {
        throw new Error('an external S3_TEST_ENDPOINT cannot be stopped');
      },
      start: async () => undefined,
      close: async () => undefined,
    });
  }
  if (await dockerAnswers()) return startMinio();
  return startS3rver();
}

async function endpointFor(
  kind: S3TestEndpoint['kind'],
  endpoint: string,
  region: string,
  credentials: S3TestEndpoint['credentials'],
  checksum: S3TestEndpoint['checksum'],
  lifecycle: Pick<S3TestEndpoint, 'canStop' | 'stop' | 'start' | 'close'> & { disposable?: boolean },
): Promise<S3TestEndpoint> {
  const config: S3ClientConfig = {
    endpoint,
    region,
    credentials,
    forcePathStyle: true,
    requestChecksumCalculation: checksum,
    responseChecksumValidation: checksum,
  };
  const admin = new S3Client(config);
  const created: string[] = [];
  let counter = 0;

  async function createBucket(options?: { versioning?: boolean }): Promise<string> {
    const name = `kyozo-test-${process.pid}-${Date.now().toString(36)}-${counter++}`;
    await admin.send(new CreateBucketCommand({ Bucket: name }));
    created.push(name);
    if (options?.versioning) {
      await admin.send(new PutBucketVersioningCommand({ Bucket: name, VersioningConfiguration: { Status: 'Enabled' } }));
    }
    return name;
  }

  // Measured: s3rver takes PutBucketVersioning for a CreateBucket and answers GetBucketVersioning with no status.
  let versioning = false;
  try {
    const probe = await createBucket({ versioning: true });
    const out = await admin.send(new GetBucketVersioningCommand({ Bucket: probe }));
    versioning = out.Status === 'Enabled';
  } catch {
    versioning = false;
  }

  return {
    kind,
    endpoint,
    region,
    credentials,
    checksum,
    versioning,
    canStop: lifecycle.canStop,
    client: () => new S3Client(config),
    createBucket,
    async removeBucket(name) {
      created.splice(created.indexOf(name), 1);
      if (!lifecycle.disposable) await emptyAndRemove(admin, name);
    },
    stop: lifecycle.stop,
    start: lifecycle.start,
    async close() {
      // A disposable endpoint (s3rver in a temp directory) goes away whole: no need to empty its buckets.
      if (!lifecycle.disposable) for (const bucket of created) await emptyAndRemove(admin, bucket).catch(() => undefined);
      admin.destroy();
      await lifecycle.close();
    },
  };
}

async function emptyAndRemove(client: S3Client, bucket: string): Promise<void> {
  for (;;) {
    const versions = await client.send(new ListObjectVersionsCommand({ Bucket: bucket })).catch(() => undefined);
    const entries = [...(versions?.Versions ?? []), ...(versions?.DeleteMarkers ?? [])].map((v) => ({ Key: v.Key!, VersionId: v.VersionId }));
    const objects =
      entries.length > 0
        ? entries
        : ((await client.send(new ListObjectsV2Command({ Bucket: bucket }))).Contents ?? []).map((o) => ({ Key: o.Key! }));
    if (objects.length === 0) break;
    await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: objects, Quiet: true } }));
  }
  await client.send(new DeleteBucketCommand({ Bucket: bucket }));
}

async function startMinio(): Promise<S3TestEndpoint> {
  const { GenericContainer, Wait } = await import('testcontainers');
  const container = await new GenericContainer('quay.io/minio/minio:latest')
    .withCommand(['server', '/data'])
    .withEnvironment({ MINIO_ROOT_USER: MINIO_USER, MINIO_ROOT_PASSWORD: MINIO_PASSWORD })
    .withExposedPorts(9000)
    .withWaitStrategy(Wait.forHttp('/minio/health/live', 9000))
    .start();
  const endpoint = `http://${container.getHost()}:${container.getMappedPort(9000)}`;
  return endpointFor('minio', endpoint, 'us-east-1', { accessKeyId: MINIO_USER, secretAccessKey: MINIO_PASSWORD }, 'WHEN_SUPPORTED', {
    // A restarted container gets a new host port: the outage tests need the same address, so only s3rver stops.
    canStop: false,
    stop: async () => {
      throw new Error('the MinIO test container is not stopped by tests');
    },
    start: async () => undefined,
    close: async () => {
      await container.stop();
    },
  });
}

async function startS3rver(): Promise<S3TestEndpoint> {
  const directory = await mkdtemp(path.join(os.tmpdir(), 'kyozo-s3rver-'));
  const script = path.join(import.meta.dirname, 's3rver-process.mjs');
  let child: ChildProcess | undefined;
  let port = 0;

  async function spawn(): Promise<void> {
    const started = fork(script, [], {
      execArgv: ['--openssl-legacy-provider'],
      env: { ...process.env, S3RVER_DIR: directory, S3RVER_PORT: String(port) },
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    });
    port = await new Promise<number>((resolve, reject) => {
      started.once('message', (message) => resolve((message as { port: number }).port));
      started.once('exit', (code) => reject(new Error(`s3rver exited with code ${code} before listening`)));
      started.once('error', reject);
    });
    child = started;
  }

  async function kill(): Promise<void> {
    const running = child;
    child = undefined;
    if (!running || running.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      running.once('exit', () => resolve());
      running.kill('SIGKILL');
    });
  }

  await spawn();
  // Whoever forgets close() (a shared endpoint lives as long as its test process) still leaves no data behind.
  process.once('exit', () => {
    child?.kill('SIGKILL');
    rmSync(directory, { recursive: true, force: true });
  });
  return endpointFor('s3rver', `http://127.0.0.1:${port}`, 'us-east-1', { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' }, 'WHEN_REQUIRED', {
    canStop: true,
    disposable: true,
    stop: kill,
    start: spawn,
    close: async () => {
      await kill();
      await rm(directory, { recursive: true, force: true });
    },
  });
}

/**
 * moto's S3 server (`moto_server` on PATH; Python's moto, installed on these machines) on a free port: it keeps
 * everything in memory and has native bucket versioning, which s3rver lacks. Undefined when it is not installed.
 */
export async function startMoto(): Promise<S3TestEndpoint | undefined> {
  const port = await freePort();
  const child = fork(path.join(import.meta.dirname, 'moto-process.mjs'), [], {
    env: { ...process.env, MOTO_PORT: String(port) },
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const exited = new Promise<undefined>((resolve) => child.once('exit', () => resolve(undefined)));
  const url = `http://127.0.0.1:${port}`;
  const answers = (async () => {
    for (let i = 0; i < 300 && child.exitCode === null; i++) {
      if (await fetch(url).then(() => true, () => false)) return true;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return undefined;
  })();
  if ((await Promise.race([exited, answers])) === undefined) {
    child.kill('SIGTERM');
    return undefined;
  }
  return endpointFor('moto', url, 'us-east-1', { accessKeyId: 'moto', secretAccessKey: 'moto' }, 'WHEN_REQUIRED', {
    canStop: false, // its data lives in the process: a restart would lose it
    disposable: true,
    stop: async () => {
      throw new Error('the moto test server is not stopped by tests');
    },
    start: async () => undefined,
    close: async () => {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await exited;
    },
  });
}

/**
 * An endpoint with native bucket versioning, for the tests of that mode: `main` when it has it (MinIO, a real
 * bucket), else moto when installed; `reason` says why there is none. Close it only when it is not `main`.
 */
export async function startVersionedS3(main: S3TestEndpoint): Promise<{ endpoint?: S3TestEndpoint; reason: string }> {
  if (main.versioning) return { endpoint: main, reason: '' };
  const moto = await startMoto();
  if (moto?.versioning) return { endpoint: moto, reason: '' };
  await moto?.close();
  return { reason: `${main.kind} has no native bucket versioning and moto_server is not installed; set S3_TEST_ENDPOINT to a MinIO or run Docker to cover it` };
}

let shared: Promise<S3TestEndpoint> | undefined;

/** One endpoint per test process, for suites that only need buckets (the contract suite). */
export function sharedS3(): Promise<S3TestEndpoint> {
  shared ??= startS3();
  return shared;
}

let sharedVersioned: Promise<{ endpoint?: S3TestEndpoint; reason: string }> | undefined;

/** One natively versioned endpoint per test process (see `startVersionedS3`), left running until the process exits. */
export function sharedVersionedS3(): Promise<{ endpoint?: S3TestEndpoint; reason: string }> {
  sharedVersioned ??= sharedS3().then(startVersionedS3);
  return sharedVersioned;
}

/** A provider on a fresh bucket of `endpoint` (the shared one), natively versioned or not, for the contract suite. */
export async function s3ContractFixture(endpoint?: S3TestEndpoint, versioning = false): Promise<{ provider: S3Provider; dispose(): Promise<void> }> {
  endpoint ??= await sharedS3();
  const bucket = await endpoint.createBucket({ versioning });
  const provider = await createS3Provider(s3ProviderOptions(endpoint, bucket));
  return { provider, dispose: () => endpoint.removeBucket(bucket) };
}

/** The environment a service process needs for s3 stores on `endpoint` (bucket `bucket` unless a store names its own). */
export function s3ServiceEnv(endpoint: S3TestEndpoint, bucket: string): Record<string, string> {
  return {
    S3_BUCKET: bucket,
    S3_ENDPOINT: endpoint.endpoint,
    S3_FORCE_PATH_STYLE: 'true',
    S3_CHECKSUM: endpoint.checksum,
    AWS_REGION: endpoint.region,
    AWS_ACCESS_KEY_ID: endpoint.credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: endpoint.credentials.secretAccessKey,
  };
}

/** Provider options for a bucket of `endpoint`. */
export function s3ProviderOptions(endpoint: S3TestEndpoint, bucket: string, overrides: Partial<S3ProviderOptions> = {}): S3ProviderOptions {
  return {
    bucket,
    endpoint: endpoint.endpoint,
    region: endpoint.region,
    credentials: endpoint.credentials,
    forcePathStyle: true,
    checksum: endpoint.checksum,
    ...overrides,
  };
}
