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
}

/**
 * Graceful shutdown: the first SIGTERM/SIGINT runs `shutdown` and exits 0 when it is done (1 if it threw); a
 * second signal exits 1 at once, for an operator who does not want to wait.
 */
export function shutdownOnSignals(
  shutdown: () => Promise<void>,
  { log, signals = ['SIGTERM', 'SIGINT'], exit = (code) => process.exit(code) }: SignalOptions,
): void {
  let shuttingDown = false;
  for (const signal of signals) {
    process.on(signal, () => {
      if (shuttingDown) {
        log.warn({ signal }, 'second signal during shutdown: exiting now');
        exit(1);
        return;
      }
      shuttingDown = true;
      log.info({ signal }, 'shutting down');
      shutdown().then(
        () => {
          log.info('shutdown complete');
          exit(0);
        },
        (error: unknown) => {
          log.error({ err: error }, 'shutdown failed');
          exit(1);
        },
      );
    });
  }
}
