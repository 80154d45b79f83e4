/** Process lifecycle shared by the entry points (web, worker, embedded): config or a one-line exit, and signals. */
import { ConfigError, loadConfig, type Config } from './config.js';
import type { Logger } from './log.js';

/** The config, or one line naming the bad variable on stderr and exit code 1. */
export function loadConfigOrExit(processName: string, env: Record<string, string | undefined> = process.env): Config {
  try {
    return loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`${processName}: ${error.message}`);
      process.exit(1);
    }
    throw error;
  }
}

export interface SignalOptions {
  log: Logger;
  signals?: readonly NodeJS.Signals[];
  exit?: (code: number) => void;
  /**
   * Exit 1 when the shutdown has not finished this long after the signal: a backend that stops answering (Redis
   * gone mid-shutdown) must not keep the process up for ever. Default 60 s; the entry points pass what their own
   * waits add up to (the web drain, `WORKER_SHUTDOWN_TIMEOUT_MS`) plus `SHUTDOWN_GRACE_MS`.
   */
  deadlineMs?: number;
}

/** What a shutdown may take beyond waiting for active jobs: closing connections and stores. */
export const SHUTDOWN_GRACE_MS = 10_000;

/**
 * One Ctrl-C reaches a process more than once: the terminal signals the whole process group, and npm (or any
 * wrapper) passes the signal on to its child as well, a few milliseconds later. The same signal again within this
 * window is that echo, not an operator pressing twice.
 */
export const SIGNAL_ECHO_MS = 500;

/**
 * Graceful shutdown, installed before the start so that a signal during it stops what was started: the first
 * SIGTERM, SIGINT or SIGHUP (a closed terminal) runs `shutdown` and exits 0 when it is done (1 if it threw or passed
 * `deadlineMs`); a second signal exits 1 at once, for an operator who does not want to wait — except the first one
 * again within `SIGNAL_ECHO_MS`, which is the same signal delivered twice (`SIGNAL_ECHO_MS`). The function returned
 * runs the same shutdown for a start that failed, and exits with `exitCode`.
 */
export function shutdownOnSignals(
  shutdown: () => Promise<void>,
  { log, signals = ['SIGTERM', 'SIGINT', 'SIGHUP'], exit = (code) => process.exit(code), deadlineMs = 60_000 }: SignalOptions,
): (exitCode: number) => void {
  let shuttingDown = false;
  let first: { signal?: NodeJS.Signals; at: number } | undefined;
  const begin = (exitCode: number, signal?: NodeJS.Signals) => {
    if (shuttingDown) {
      if (signal === undefined) return;
      if (signal === first?.signal && performance.now() - first.at < SIGNAL_ECHO_MS) return;
      log.warn({ signal }, 'second signal during shutdown: exiting now');
      exit(1);
      return;
    }
    shuttingDown = true;
    first = { signal, at: performance.now() };
    log.info({ signal }, 'shutting down');
    const deadline = setTimeout(() => {
      log.error({ deadlineMs }, 'shutdown did not finish in time: exiting now');
      exit(1);
    }, deadlineMs).unref();
    shutdown().then(
      () => {
        clearTimeout(deadline);
        log.info('shutdown complete');
        exit(exitCode);
      },
      (error: unknown) => {
        clearTimeout(deadline);
        log.error({ err: error }, 'shutdown failed');
        exit(1);
      },
    );
  };
  for (const signal of signals) process.on(signal, () => begin(0, signal));
  return (exitCode) => begin(exitCode);
}

export interface ServiceOptions {
  /** How the process names itself in a start-up error. */
  name: string;
  log: Logger;
  deadlineMs: number;
  /** Starts the service; `aborted` says a signal came during the start, which should go no further. */
  start(aborted: AbortSignal): Promise<void>;
  /** Stops what `start` started, however far it got. */
  stop(): Promise<void>;
}

/**
 * An entry point's life: the signal handling goes in before the start, so a signal during it stops what was
 * started; a start that fails prints why on stderr, stops what it started, and exits 1.
 */
export function runService({ name, log, deadlineMs, start, stop }: ServiceOptions): void {
  // Logged, not a crash: a library's promise nobody awaited (BullMQ has some) would take every request, upload and
  // job in progress down with the process.
  process.on('unhandledRejection', (reason) => log.error({ err: reason }, 'unhandled promise rejection'));
  const abort = new AbortController();
  const stopAfterFailure = shutdownOnSignals(
    async () => {
      abort.abort();
      await starting;
      await stop();
    },
    { log, deadlineMs },
  );
  const starting = start(abort.signal).catch((error: unknown) => {
    if (abort.signal.aborted) return; // stopped by a signal, not a failure
    console.error(`${name}: cannot start: ${error instanceof Error ? error.message : String(error)}`);
    stopAfterFailure(1);
  });
}

/**
 * `promise`, or a rejection with the signal's reason once `signal` is aborted: a start step that waits on a backend
 * (Redis down at start) does not hold up a signal's shutdown.
 */
export function unlessAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  if (signal.aborted) return Promise.reject(signal.reason);
  let onAbort!: () => void;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
  });
  return Promise.race([promise, aborted]).finally(() => signal.removeEventListener('abort', onAbort));
}
