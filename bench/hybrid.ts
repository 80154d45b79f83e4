/**
 * Hybrid read latency (issue 7), each beside its baseline in alternating rounds of the same run:
 * - hot read: a 1 KiB object promoted into the hot tier, against a bare RamProvider read of the same object
 *   (target: p50 within 1.5×; the system this replaces quoted ~0.5 ms);
 * - cold read: a 1 KiB object that is never promoted, against a bare s3 provider read on the same endpoint and
 *   bucket (target: p50 within 1.2×).
 * Every read drains its body. Both sides are measured bare (no metrics layer), so the ratio is hybrid's own cost:
 * the hot lookup, the read count, the tier bookkeeping.
 *
 * Needs the test Redis (REDIS_URL, else 127.0.0.1:6379) and test/support/s3.ts's endpoint.
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { RamProvider } from '../src/providers/ram.js';
import { createS3Provider } from '../src/providers/s3.js';
import { openTestHybrid } from '../test/providers/fixtures/hybrid-stores.js';
import { s3ProviderOptions, startS3 } from '../test/support/s3.js';
import { latencyRow, machineName, measurePair, type BenchResult, type BenchRow } from './report.js';

const KEYS = 100;
const HOT_ITERATIONS = 5_000;
const COLD_ITERATIONS = 600;

async function drain(body: Readable): Promise<void> {
  for await (const _ of body) {
    // consume
  }
}

export async function runHybridBench(): Promise<BenchResult> {
  const endpoint = await startS3();
  const body = randomBytes(1024);
  const key = (i: number) => `bench/k${i % KEYS}`;
  const rows: BenchRow[] = [];
  const hot = await openTestHybrid({ endpoint, accessThreshold: 1 });
  const cold = await openTestHybrid({ endpoint, accessThreshold: Number.MAX_SAFE_INTEGER });
  const ram = new RamProvider({ maxBytes: 64 * 1024 * 1024 });
  const s3 = await createS3Provider(s3ProviderOptions(endpoint, cold.shared.bucket));
  let hotHits = 0;
  try {
    for (let i = 0; i < KEYS; i++) {
      await ram.write(key(i), body);
      await hot.provider.write(key(i), body);
      await cold.provider.write(key(i), body);
      await drain((await hot.provider.read(key(i))).body); // the first read crosses the threshold of 1
    }

    const hotReads = await measurePair(
      async (i) => drain((await ram.read(key(i))).body),
      async (i) => {
        const { info, body: content } = await hot.provider.read(key(i));
        if (info.tier === 'hot') hotHits++;
        await drain(content);
      },
      HOT_ITERATIONS,
    );
    const hotTarget = hotReads.ours.p50Ms / hotReads.baseline.p50Ms <= 1.5;
    rows.push(latencyRow('hybrid hot read 1KiB', hotReads.ours, 'bare RamProvider read', hotReads.baseline, { text: '≤ 1.5× ram', pass: hotTarget }));

    const coldReads = await measurePair(
      async (i) => drain((await s3.read(key(i))).body),
      async (i) => drain((await cold.provider.read(key(i))).body),
      COLD_ITERATIONS,
    );
    const coldTarget = coldReads.ours.p50Ms / coldReads.baseline.p50Ms <= 1.2;
    rows.push(latencyRow('hybrid cold read 1KiB', coldReads.ours, 'bare s3 provider read', coldReads.baseline, { text: '≤ 1.2× s3', pass: coldTarget }));
  } finally {
    await s3.close();
    await hot.dispose();
    await cold.dispose();
    await endpoint.close();
  }
  const hotSamples = HOT_ITERATIONS + Math.ceil(HOT_ITERATIONS / 5 / 5);
  return {
    suite: 'hybrid',
    machine: machineName(),
    rows,
    notes: [
      `endpoint: ${endpoint.kind} (${endpoint.endpoint}); ${KEYS} keys of 1 KiB; ram hot tier, s3 cold tier, disk backup`,
      `hot reads served by the hot tier: ${hotHits} of ${hotSamples}`,
      'p50/p99 in ms; ratio = hybrid p50 / baseline p50, measured in alternating rounds of the same run; bodies drained',
    ],
  };
}
