import { describe, expect, it } from 'vitest';
import { compareKeys } from '../../src/providers/keys.js';
import { SortedKeys } from '../../src/providers/sorted-keys.js';

/** A deterministic stream of numbers in [0, 1) (mulberry32), so a failure replays the same way. */
function seeded(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

const ALPHABET = ['a', 'b', 'z', '/', 'é', '\uffee', '😀'];

function randomKey(random: () => number): string {
  let key = '';
  const length = 1 + Math.floor(random() * 6);
  for (let i = 0; i < length; i++) key += ALPHABET[Math.floor(random() * ALPHABET.length)];
  return key;
}

describe('SortedKeys', () => {
  it('stays in compareKeys order through thousands of adds and deletes (blocks split and merge)', () => {
    const random = seeded(7);
    const keys = new SortedKeys();
    const reference = new Set<string>();
    const check = () => {
      expect([...keys.from('')]).toEqual([...reference].sort(compareKeys));
      expect(keys.size).toBe(reference.size);
    };
    // Adds, with some deletes and re-adds: about 4,000 keys, over a dozen blocks.
    for (let round = 1; round <= 10_000; round++) {
      const key = randomKey(random);
      if (random() < 0.1) expect(keys.delete(key)).toBe(reference.delete(key));
      else {
        expect(keys.add(key)).toBe(!reference.has(key));
        reference.add(key);
      }
      if (round % 1000 === 0) check();
    }
    // Then deletes of present keys down to a few, so blocks drain and merge.
    const present = [...reference];
    while (present.length > 10) {
      const [key] = present.splice(Math.floor(random() * present.length), 1);
      expect(keys.delete(key!)).toBe(true);
      reference.delete(key!);
      if (present.length % 1000 === 0) check();
    }
    check();
  });

  it('from(key) starts at the key or the first after it, strictlyAfter skips the key itself', () => {
    const keys = new SortedKeys();
    const all = Array.from({ length: 3000 }, (_, i) => `k${String(i).padStart(4, '0')}`);
    for (const key of [...all].reverse()) keys.add(key);
    expect([...keys.from('k1500')].slice(0, 2)).toEqual(['k1500', 'k1501']);
    expect([...keys.from('k1500', true)].slice(0, 2)).toEqual(['k1501', 'k1502']);
    expect([...keys.from('k1500x')][0]).toBe('k1501');
    expect([...keys.from('')]).toEqual(all);
    expect([...keys.from('k2999', true)]).toEqual([]);
    expect([...keys.from('zzz')]).toEqual([]);
  });

  it('reset replaces the set, and adds after it keep the order', () => {
    const keys = new SortedKeys();
    keys.add('old');
    const sorted = Array.from({ length: 1000 }, (_, i) => `k${String(i * 2).padStart(5, '0')}`);
    keys.reset(sorted);
    expect(keys.add('k00001')).toBe(true);
    expect(keys.add('k00002')).toBe(false);
    expect([...keys.from('')]).toEqual([...sorted, 'k00001'].sort(compareKeys));
    expect(keys.size).toBe(sorted.length + 1);
  });

  it('orders astral characters after U+E000..U+FFFF, as UTF-8 bytes do', () => {
    const keys = new SortedKeys();
    for (const key of ['😀', '\uffee', 'z']) keys.add(key);
    expect([...keys.from('')]).toEqual(['z', '\uffee', '😀']);
  });
});
