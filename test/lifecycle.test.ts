/** Signal handling shared by the entry points: a shutdown that hangs still ends the process. */
import { afterEach, describe, expect, it } from 'vitest';
import { shutdownOnSignals } from '../src/lifecycle.js';
import { quietLog } from './support/service.js';

const SIGNAL = 'SIGUSR2';
const DEFAULT_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** Listeners the test runner had before a test: only the ones a test added are removed. */
const before = new Map(DEFAULT_SIGNALS.map((signal) => [signal, process.listeners(signal)]));

afterEach(() => {
  process.removeAllListeners(SIGNAL);
  for (const [signal, listeners] of before) {
    for (const listener of process.listeners(signal)) if (!listeners.includes(listener)) process.off(signal, listener);
  }
});

describe('shutdownOnSignals', () => {
  it('exits 0 once the shutdown is done, and only then (the deadline is off)', async () => {
    const exits: number[] = [];
    shutdownOnSignals(async () => void (await sleep(10)), { log: quietLog, signals: [SIGNAL], exit: (code) => exits.push(code), deadlineMs: 60 });
    process.emit(SIGNAL);
    await sleep(150);
    expect(exits).toEqual([0]);
  });

  it('exits 1 when the shutdown hangs past its deadline (a backend that stopped answering)', async () => {
    const exits: number[] = [];
    shutdownOnSignals(() => new Promise<void>(() => {}), { log: quietLog, signals: [SIGNAL], exit: (code) => exits.push(code), deadlineMs: 50 });
    process.emit(SIGNAL);
    await sleep(20);
    expect(exits).toEqual([]);
    await sleep(100);
    expect(exits).toEqual([1]);
  });

  it('handles SIGHUP by default, as SIGTERM: a closed terminal stops the process gracefully', async () => {
    const exits: number[] = [];
    let shutdowns = 0;
    shutdownOnSignals(async () => void shutdowns++, { log: quietLog, exit: (code) => exits.push(code) });
    process.emit('SIGHUP');
    await sleep(50);
    expect({ shutdowns, exits }).toEqual({ shutdowns: 1, exits: [0] });
  });

  it('runs the same shutdown for a start that failed, once, and exits with its code', async () => {
    const exits: number[] = [];
    let shutdowns = 0;
    const stopAfterFailure = shutdownOnSignals(async () => void shutdowns++, { log: quietLog, signals: [SIGNAL], exit: (code) => exits.push(code) });
    stopAfterFailure(1);
    stopAfterFailure(1);
    await sleep(50);
    expect({ shutdowns, exits }).toEqual({ shutdowns: 1, exits: [1] });
  });
});
