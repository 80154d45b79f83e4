/** Service processes for the benchmarks (bench/fixtures/service.ts), started and stopped by message. */
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { ServiceMessage } from './fixtures/service.js';

const SCRIPT = path.join(import.meta.dirname, 'fixtures', 'service.ts');

export interface ServiceProcess {
  child: ChildProcess;
  url?: string;
  /** The peak resident set size of the process so far and its current one, in bytes, and its CPU time so far. */
  stats(): Promise<{ maxRssBytes: number; rssBytes: number; cpuSeconds: number }>;
  /** Graceful shutdown; resolves with the peak RSS over the process's life. */
  stop(): Promise<{ maxRssBytes: number }>;
}

function next<T extends ServiceMessage>(child: ChildProcess, is: (message: ServiceMessage) => message is T): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (message: ServiceMessage) => {
      if (!is(message)) return;
      cleanup();
      resolve(message);
    };
    const onExit = (code: number | null) => {
      cleanup();
      reject(new Error(`bench service process exited (${code}) before answering`));
    };
    const cleanup = () => {
      child.off('message', onMessage);
      child.off('exit', onExit);
    };
    child.on('message', onMessage);
    child.once('exit', onExit);
  });
}

export async function startService(role: 'web' | 'worker', env: Record<string, string>): Promise<ServiceProcess> {
  const child = fork(SCRIPT, [], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, LOG_LEVEL: 'warn', ...env, KYOZO_BENCH_ROLE: role },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const ready = await next(child, (m): m is Extract<ServiceMessage, { ready: true }> => 'ready' in m);
  return {
    child,
    url: ready.url,
    async stats() {
      const answer = next(child, (m): m is Extract<ServiceMessage, { stats: true }> => 'stats' in m);
      child.send({ stats: true });
      return answer;
    },
    async stop() {
      if (child.exitCode !== null) return { maxRssBytes: Number.NaN };
      const answer = next(child, (m): m is Extract<ServiceMessage, { stopped: true }> => 'stopped' in m);
      child.send({ stop: true });
      const stopped = await answer;
      if (child.exitCode === null) await new Promise((resolve) => child.once('exit', resolve));
      return stopped;
    },
  };
}
