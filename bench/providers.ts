/**
 * Provider latencies (issue 2, 3, 4): p50/p99 of write, read and createVersion for 1 KiB and 1 MiB bodies, each
 * beside a raw baseline run in the same process a moment before (disk: writeFile to a temp file + fsync + rename;
 * ram: a bare Map). Providers are measured through the metrics layer, as the service runs them.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, rename, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fsyncDirectory } from '../src/providers/atomic-file.js';
import { DiskProvider } from '../src/providers/disk.js';
import { withMetrics } from '../src/providers/metrics.js';
import { RamProvider } from '../src/providers/ram.js';
import type { StorageProvider } from '../src/providers/types.js';
import { runGitBench } from './git.js';
import { drain, latencyRow, machineName, measure, measurePair, type BenchResult, type BenchRow } from './report.js';
import { runS3Bench } from './s3.js';

const SIZES = [
  { label: '1KiB', bytes: 1024, iterations: 2000 },
  { label: '1MiB', bytes: 1024 * 1024, iterations: 200 },
];

async function readWhole(provider: StorageProvider, key: string): Promise<void> {
  await drain((await provider.read(key)).body);
}

async function ramRows(): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  for (const size of SIZES) {
    const body = randomBytes(size.bytes);
    const map = new Map<string, Buffer>();
    const ram = withMetrics(new RamProvider({ maxBytes: 1024 * 1024 * 1024 }));
    const { baseline: rawSet, ours: write } = await measurePair(
      async (i) => map.set(`k${i % 100}`, Buffer.from(body)),
      (i) => ram.write(`k${i % 100}`, body),
      size.iterations,
    );
    const { baseline: rawGet, ours: read } = await measurePair(
      async (i) => map.get(`k${i % 100}`),
      (i) => readWhole(ram, `k${i % 100}`),
      size.iterations,
    );
    const version = await measure((i) => ram.createVersion(`v${i % 100}`, body, { message: `v${i}` }), Math.min(size.iterations, 300));
    const small = size.bytes === 1024;
    rows.push(
      latencyRow(`ram write ${size.label}`, write, 'Map.set', rawSet, small ? { text: 'p50 < 0.050 ms', pass: write.p50Ms < 0.05 } : undefined),
      latencyRow(`ram read ${size.label}`, read, 'Map.get', rawGet, small ? { text: 'p50 < 0.050 ms', pass: read.p50Ms < 0.05 } : undefined),
      latencyRow(`ram createVersion ${size.label}`, version, 'Map.set', rawSet),
    );
  }
  return rows;
}

/** The raw baseline the disk provider is held to: what any careful atomic write costs at minimum. */
async function rawAtomicWrite(dir: string, name: string, body: Buffer): Promise<void> {
  const temp = path.join(dir, `.tmp-${name}`);
  const handle = await open(temp, 'w');
  await handle.writeFile(body);
  await handle.sync();
  await handle.close();
  await rename(temp, path.join(dir, name));
}

async function diskRows(): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kyozo-bench-disk-'));
  try {
    for (const size of SIZES) {
      const body = randomBytes(size.bytes);
      const iterations = Math.min(size.iterations, 500);
      const raw = path.join(dir, `raw-${size.label}`);
      await mkdir(raw, { recursive: true });
      const disk = withMetrics(new DiskProvider({ root: path.join(dir, `store-${size.label}`), fsync: true }));
      const { baseline: rawWrite, ours: write } = await measurePair(
        (i) => rawAtomicWrite(raw, `f${i % 100}`, body),
        (i) => disk.write(`dir/f${i % 100}`, body),
        iterations,
      );
      // The design also fsyncs the directory after the rename (so the rename itself survives a power cut):
      // the same careful write by hand is the floor any durable write here can reach.
      const { baseline: durableWrite, ours: write2 } = await measurePair(
        async (i) => {
          await rawAtomicWrite(raw, `f${i % 100}`, body);
          await fsyncDirectory(raw);
        },
        (i) => disk.write(`dir/f${i % 100}`, body),
        iterations,
      );
      const { baseline: rawRead, ours: read } = await measurePair(
        (i) => readFile(path.join(raw, `f${i % 100}`)),
        (i) => readWhole(disk, `dir/f${i % 100}`),
        iterations,
      );
      const version = await measure((i) => disk.createVersion(`v/f${i % 50}`, body, { message: `v${i}` }), Math.min(iterations, 200));
      const small = size.bytes === 1024;
      rows.push(
        latencyRow(`disk write ${size.label}`, write, 'temp+fsync+rename', rawWrite, small ? { text: '≤ 1.5× baseline', pass: write.p50Ms <= 1.5 * rawWrite.p50Ms } : undefined),
        latencyRow(`disk write ${size.label}`, write2, 'same + fsync(dir)', durableWrite),
        latencyRow(`disk read ${size.label}`, read, 'readFile', rawRead, small ? { text: 'p50 < 1 ms', pass: read.p50Ms < 1 } : undefined),
        latencyRow(`disk createVersion ${size.label}`, version, 'temp+fsync+rename', rawWrite),
      );
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return rows;
}

/** ram and disk here; git and s3 have suites of their own (bench/git.ts, bench/s3.ts) that run with this one. */
export async function runProvidersBench(): Promise<BenchResult[]> {
  const rows = [...(await ramRows()), ...(await diskRows())];
  return [
    { suite: 'providers', machine: machineName(), rows, notes: ['p50/p99 in ms; ratio = provider p50 / baseline p50, measured in alternating rounds'] },
    await runGitBench(),
    await runS3Bench(),
  ];
}
