/**
 * `KeyTurns` (src/providers/key-turns.ts): a job's event waits for the jobs that passed their fence on the same key
 * before it, whether those emitted or failed, and nothing is kept once a key has no job in flight.
 */
import { describe, expect, it } from 'vitest';
import { KeyTurns } from '../../src/providers/key-turns.js';

const settledSoon = async (promise: Promise<void> | undefined): Promise<boolean> => {
  if (promise === undefined) return true;
  let done = false;
  void promise.then(() => (done = true));
  for (let i = 0; i < 10; i++) await Promise.resolve();
  return done;
};

describe('KeyTurns', () => {
  it('the first turn on a key need not wait; a later one waits until every earlier one left', async () => {
    const turns = new KeyTurns();
    const a = turns.take('s\nk');
    const b = turns.take('s\nk');
    const c = turns.take('s\nk');
    expect(a.ready).toBeUndefined();
    expect(await settledSoon(b.ready)).toBe(false);
    // b fails before its turn came: c still waits for a.
    b.leave();
    expect(await settledSoon(c.ready)).toBe(false);
    a.leave();
    expect(await settledSoon(c.ready)).toBe(true);
    c.leave();
    for (let i = 0; i < 10; i++) await Promise.resolve();
    expect(turns.size).toBe(0);
  });

  it('keys do not wait for each other, and leaving twice changes nothing', async () => {
    const turns = new KeyTurns();
    const a = turns.take('s\na');
    const b = turns.take('s\nb');
    expect(b.ready).toBeUndefined();
    a.leave();
    a.leave();
    const a2 = turns.take('s\na');
    expect(await settledSoon(a2.ready)).toBe(true);
    a2.leave();
    b.leave();
    for (let i = 0; i < 10; i++) await Promise.resolve();
    expect(turns.size).toBe(0);
  });
});
