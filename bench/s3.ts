/**
 * s3 provider latency (issue 4): write and read of 1 KiB (and 1 MiB, for information) through the provider and
 * the metrics layer, beside a bare S3Client doing the same PutObject/GetObject on the same endpoint in the same
 * run. Target: provider p50 within 1.2× of the bare SDK for 1 KiB (a small write is one PutObject, a read one
 * GetObject: the difference is hashing, validation and the resilience policy).
 *
 * The endpoint is test/support/s3.ts's: S3_TEST_ENDPOINT, else MinIO when Docker answers, else s3rver.
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { withMetrics } from '../src/providers/metrics.js';
import { createS3Provider } from '../src/providers/s3.js';
import { s3ProviderOptions, startS3 } from '../test/support/s3.js';
import { drain, latencyRow, machineName, measurePair, type BenchResult, type BenchRow } from './report.js';

const SIZES = [
  { label: '1KiB', bytes: 1024, iterations: 600, target: 1.2 },
  { label: '1MiB', bytes: 1024 * 1024, iterations: 60, target: undefined },
];

export async function runS3Bench(): Promise<BenchResult> {
  const endpoint = await startS3();
  const bare = endpoint.client();
  const rows: BenchRow[] = [];
  let mode = '';
  try {
    const bucket = await endpoint.createBucket();
    const s3 = await createS3Provider(s3ProviderOptions(endpoint, bucket));
    mode = s3.versioning;
    const provider = withMetrics(s3);
    try {
      for (const size of SIZES) {
        const body = randomBytes(size.bytes);
        const bareKey = (i: number) => `bare/${size.label}/k${i % 100}`;
        const ourKey = (i: number) => `ours/${size.label}/k${i % 100}`;
        const writes = await measurePair(
          (i) => bare.send(new PutObjectCommand({ Bucket: bucket, Key: bareKey(i), Body: body })),
          (i) => provider.write(ourKey(i), body),
          size.iterations,
        );
        const reads = await measurePair(
          async (i) => drain((await bare.send(new GetObjectCommand({ Bucket: bucket, Key: bareKey(i) }))).Body as Readable),
          async (i) => drain((await provider.read(ourKey(i))).body),
          size.iterations,
        );
        const target = (ratio: number) => (size.target === undefined ? undefined : { text: `≤ ${size.target}× bare SDK`, pass: ratio <= size.target });
        rows.push(
          latencyRow(`s3 write ${size.label}`, writes.ours, 'bare PutObject', writes.baseline, target(writes.ours.p50Ms / writes.baseline.p50Ms)),
          latencyRow(`s3 read ${size.label}`, reads.ours, 'bare GetObject', reads.baseline, target(reads.ours.p50Ms / reads.baseline.p50Ms)),
        );
      }
    } finally {
      await provider.close();
    }
  } finally {
    bare.destroy();
    await endpoint.close();
  }
  return {
    suite: 's3',
    machine: machineName(),
    rows,
    notes: [
      `endpoint: ${endpoint.kind} (${endpoint.endpoint}); provider versioning mode: ${mode}`,
      'p50/p99 in ms; ratio = provider p50 / bare S3Client p50, measured in alternating rounds of the same run',
    ],
  };
}
