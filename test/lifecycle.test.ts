/** Signal handling shared by the entry points: a shutdown that hangs still ends the process. */
import { afterEach, describe, expect, it } from 'vitest';
import { shutdownOnSignals } from '../src/lifecycle.js';
import { quietLog } from './support/service.js';

const SIGNAL = 'SIGUSR2';
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

afterEach(() => {
  process.removeAllListeners(SIGNAL);
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
});
