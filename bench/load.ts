/**
 * HTTP load from autocannon, run as its own process: on two cores a load generator inside the server's process
 * would take the event loop the server is being measured on.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);
const AUTOCANNON = path.join(path.dirname(require.resolve('autocannon/package.json')), 'autocannon.js');

export interface LoadOptions {
  url: string;
  method: string;
  body?: string;
  headers?: Record<string, string>;
  connections: number;
  seconds: number;
}

export interface LoadResult {
  /** Successful (2xx) answers per second over the run. */
  opsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  ok: number;
  notOk: number;
  errors: number;
}

export async function load(options: LoadOptions): Promise<LoadResult> {
  const args = [AUTOCANNON, '-c', String(options.connections), '-d', String(options.seconds), '-m', options.method, '-n', '-j'];
  for (const [name, value] of Object.entries(options.headers ?? {})) args.push('-H', `${name}=${value}`);
  if (options.body !== undefined) args.push('-b', options.body);
  args.push(options.url);
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  if (code !== 0) throw new Error(`autocannon exited with ${code}: ${stderr.slice(-500)}`);
  const result = JSON.parse(stdout) as {
    duration: number;
    '2xx': number;
    non2xx: number;
    errors: number;
    timeouts: number;
    latency: { p50: number; p99: number };
  };
  return {
    opsPerSec: result['2xx'] / result.duration,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    ok: result['2xx'],
    notOk: result.non2xx,
    errors: result.errors + result.timeouts,
  };
}
