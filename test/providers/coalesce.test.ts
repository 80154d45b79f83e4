import { describe, expect, it } from 'vitest';
import { coalesced } from '../../src/providers/coalesce.js';

/** A run whose end the test decides; `state` is what it reads when it starts. */
function gatedRuns(read: () => number) {
  const runs: { value: number; finish(): void; fail(error: Error): void }[] = [];
  const run = () =>
    new Promise<number>((resolve, reject) => {
      const value = read();
      runs.push({ value, finish: () => resolve(value), fail: reject });
    });
  return { runs, run };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

describe('coalesced', () => {
  it('ten calls during a run share one next run: two runs in all', async () => {
    let state = 0;
    const { runs, run } = gatedRuns(() => state);
    const call = coalesced(run);
    const first = call();
    state = 1; // a write that finished after the first call began: the later calls must see it
    const later = Array.from({ length: 10 }, () => call());
    expect(runs).toHaveLength(1);
    runs[0]!.finish();
    await settle();
    expect(runs).toHaveLength(2);
    runs[1]!.finish();
    expect(await first).toBe(0);
    expect(await Promise.all(later)).toEqual(Array(10).fill(1));
  });

  it('a failed run fails only its own callers; the waiting ones get the next run', async () => {
    const { runs, run } = gatedRuns(() => 7);
    const call = coalesced(run);
    const first = call();
    const waiting = call();
    runs[0]!.fail(new Error('walk failed'));
    await expect(first).rejects.toThrow('walk failed');
    await settle();
    runs[1]!.finish();
    expect(await waiting).toBe(7);
  });

  it('never has two runs in flight, even for callers that call again the moment their answer arrives', async () => {
    let inFlight = 0;
    let most = 0;
    const call = coalesced(async () => {
      most = Math.max(most, ++inFlight);
      await new Promise((resolve) => setTimeout(resolve, 1 + Math.random() * 10));
      inFlight--;
    });
    let polling = true;
    const clients = Array.from({ length: 50 }, async () => {
      while (polling) await call();
    });
    await new Promise((resolve) => setTimeout(resolve, 300));
    polling = false;
    await Promise.all(clients);
    expect(most).toBe(1);
  });

  it('keeps nothing once the runs ended: the next call runs again', async () => {
    let state = 0;
    const { runs, run } = gatedRuns(() => state);
    const call = coalesced(run);
    const first = call();
    runs[0]!.finish();
    expect(await first).toBe(0);
    state = 2;
    const second = call();
    expect(runs).toHaveLength(2);
    runs[1]!.finish();
    expect(await second).toBe(2);
  });
});
