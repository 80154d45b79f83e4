/**
 * Shared shape and output of every benchmark suite: rows of p50/p99 beside a baseline measured in the same run
 * (machines here are noisy, so only same-run ratios mean anything), printed as a table and written as JSON.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

export interface BenchRow {
  name: string;
  p50Ms: number;
  p99Ms: number;
  /** Throughput suites report ops/s instead of (or beside) latency. */
  opsPerSec?: number;
  baseline?: string;
  baselineP50Ms?: number;
  baselineOpsPerSec?: number;
  /** A measured amount that is neither a latency nor a rate (memory), in `unit`, beside the baseline's. */
  value?: number;
  baselineValue?: number;
  unit?: string;
  /** ours / baseline for latency, baseline-normalised throughput for rates. */
  ratio?: number;
  target?: string;
  pass?: boolean;
}

export interface BenchResult {
  suite: string;
  machine: string;
  rows: BenchRow[];
  notes: string[];
}

export function percentile(sortedMs: number[], p: number): number {
  if (sortedMs.length === 0) return Number.NaN;
  const index = Math.min(sortedMs.length - 1, Math.max(0, Math.ceil((p / 100) * sortedMs.length) - 1));
  return sortedMs[index]!;
}

/** Reads a body to its end (a read is only measured once its bytes arrived). */
export async function drain(body: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of body) {
    // discard
  }
}

export interface Latency {
  p50Ms: number;
  p99Ms: number;
}

function summarize(samples: number[]): Latency {
  samples.sort((a, b) => a - b);
  return { p50Ms: percentile(samples, 50), p99Ms: percentile(samples, 99) };
}

async function sample(op: (i: number) => Promise<unknown>, from: number, count: number, into: number[]): Promise<void> {
  for (let i = from; i < from + count; i++) {
    const start = process.hrtime.bigint();
    await op(i);
    into.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
}

/** Runs `op` `iterations` times after `warmup` runs and returns p50/p99 in milliseconds. */
export async function measure(op: (i: number) => Promise<unknown>, iterations: number, warmup = Math.ceil(iterations / 10)): Promise<Latency> {
  await sample(op, 0, warmup, []);
  const samples: number[] = [];
  await sample(op, warmup, iterations, samples);
  return summarize(samples);
}

/**
 * Measures `ours` beside `baseline` in alternating rounds, so the drift of a noisy machine (other processes, disk
 * write-back) falls on both alike and their ratio means something.
 */
export async function measurePair(
  baseline: (i: number) => Promise<unknown>,
  ours: (i: number) => Promise<unknown>,
  iterations: number,
  rounds = 5,
): Promise<{ baseline: Latency; ours: Latency }> {
  const perRound = Math.max(1, Math.ceil(iterations / rounds));
  await sample(baseline, 0, Math.ceil(perRound / 5), []);
  await sample(ours, 0, Math.ceil(perRound / 5), []);
  const baselineSamples: number[] = [];
  const ourSamples: number[] = [];
  for (let round = 0; round < rounds; round++) {
    await sample(baseline, round * perRound, perRound, baselineSamples);
    await sample(ours, round * perRound, perRound, ourSamples);
  }
  return { baseline: summarize(baselineSamples), ours: summarize(ourSamples) };
}

/** A latency row: ours beside a baseline measured in the same run, with an optional target. */
export function latencyRow(name: string, ours: Latency, baselineName: string, baseline: Latency, target?: { text: string; pass: boolean }): BenchRow {
  return {
    name,
    p50Ms: ours.p50Ms,
    p99Ms: ours.p99Ms,
    baseline: baselineName,
    baselineP50Ms: baseline.p50Ms,
    ratio: ours.p50Ms / baseline.p50Ms,
    ...(target ? { target: target.text, pass: target.pass } : {}),
  };
}

function cell(value: number | undefined, digits = 3): string {
  return value === undefined || Number.isNaN(value) ? '' : value.toFixed(digits);
}

export function formatTable(result: BenchResult): string {
  // The value columns appear only in suites that measure amounts (memory).
  const amounts = result.rows.some((row) => row.value !== undefined);
  const amount = (value: number | undefined, unit: string | undefined) => (value === undefined || Number.isNaN(value) ? '' : `${cell(value, value >= 100 ? 0 : 1)} ${unit ?? ''}`.trim());
  const header = ['case', 'p50 ms', 'p99 ms', 'ops/s', ...(amounts ? ['value'] : []), 'baseline', 'base p50 ms', 'base ops/s', ...(amounts ? ['base value'] : []), 'ratio', 'target', 'ok'];
  const lines = result.rows.map((row) => [
    row.name,
    cell(row.p50Ms),
    cell(row.p99Ms),
    cell(row.opsPerSec, 0),
    ...(amounts ? [amount(row.value, row.unit)] : []),
    row.baseline ?? '',
    cell(row.baselineP50Ms),
    cell(row.baselineOpsPerSec, 0),
    ...(amounts ? [amount(row.baselineValue, row.unit)] : []),
    cell(row.ratio, 2),
    row.target ?? '',
    row.pass === undefined ? '' : row.pass ? 'yes' : 'NO',
  ]);
  const widths = header.map((title, i) => Math.max(title.length, ...lines.map((line) => line[i]!.length)));
  const format = (line: string[]) => `| ${line.map((value, i) => value.padEnd(widths[i]!)).join(' | ')} |`;
  return [
    `### ${result.suite} (${result.machine})`,
    format(header),
    `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`,
    ...lines.map(format),
    ...result.notes.map((note) => `- ${note}`),
  ].join('\n');
}

export async function writeResult(result: BenchResult, dir = path.join(import.meta.dirname, 'results')): Promise<string> {
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, `${result.suite}.json`);
  await writeFile(file, `${JSON.stringify({ ...result, at: new Date().toISOString() }, null, 2)}\n`);
  return file;
}

export function machineName(): string {
  return `${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.cpus()[0]?.model.trim() ?? 'unknown cpu'}, node ${process.version}`;
}
