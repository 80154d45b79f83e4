import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { NotFoundError } from '../../src/providers/errors.js';
import { withMetrics, type Observation } from '../../src/providers/metrics.js';
import { RamProvider } from '../../src/providers/ram.js';
import type { ListOptions, Page } from '../../src/providers/types.js';

describe('the metrics layer', () => {
  it('counts operations and their errors, and reports each to the observer', async () => {
    const observed: Observation[] = [];
    const provider = withMetrics(new RamProvider({ maxBytes: 1024 * 1024 }), (observation) => observed.push(observation));
    await provider.write('a', 'one');
    await provider.write('b', 'two');
    await expect(provider.stat('missing')).rejects.toBeInstanceOf(NotFoundError);

    const { ops } = await provider.stats();
    expect(ops?.write).toMatchObject({ count: 2, errors: 0 });
    expect(ops?.stat).toMatchObject({ count: 1, errors: 1 });
    expect(ops?.read).toBeUndefined();
    expect(observed.map(({ op, errorCode }) => [op, errorCode])).toEqual([
      ['write', undefined],
      ['write', undefined],
      ['stat', 'NOT_FOUND'],
    ]);
  });

  it('measures listKeys, where a store has it (s3: what a listing by delimiter asks for)', async () => {
    class KeyListing extends RamProvider {
      async listKeys(opts?: ListOptions): Promise<Page<string>> {
        const { items, cursor } = await this.list(opts);
        return { items: items.map((item) => item.key), ...(cursor === undefined ? {} : { cursor }) };
      }
    }
    const observed: Observation[] = [];
    const provider = withMetrics(new KeyListing({ maxBytes: 1024 * 1024 }), (observation) => observed.push(observation));
    await provider.write('k', 'x');
    expect(await provider.listKeys()).toEqual({ items: ['k'] });
    expect((await provider.stats()).ops?.listKeys).toMatchObject({ count: 1, errors: 0 });
    expect(observed.map(({ op }) => op)).toContain('listKeys');
  });

  it("does not count a fence's refusal as an error of the store", async () => {
    const observed: Observation[] = [];
    const provider = withMetrics(new RamProvider({ maxBytes: 1024 * 1024 }), (observation) => observed.push(observation));
    const refusal = new Error('lost its lock');
    await expect(provider.write('fenced', 'x', { fence: () => Promise.reject(refusal) })).rejects.toBe(refusal);
    expect((await provider.stats()).ops?.write).toMatchObject({ count: 1, errors: 0 });
    expect(observed.map(({ op, errorCode }) => [op, errorCode])).toEqual([['write', undefined]]);
  });

  it('wraps a method once, and measures the new one when the provider replaces it', async () => {
    const inner = new RamProvider({ maxBytes: 1024 * 1024 });
    const provider = withMetrics(inner);
    expect(provider.write).toBe(provider.write);
    await provider.write('a', 'one');

    const calls: string[] = [];
    const original = inner.write.bind(inner);
    inner.write = async (key, body, opts) => {
      calls.push(key);
      return original(key, body, opts);
    };
    await provider.write('b', 'two');
    expect(calls).toEqual(['b']);
    expect((await provider.stats()).ops?.write?.count).toBe(2);
  });

  it('keeps provider-specific methods reachable, bound to the provider', async () => {
    const provider = withMetrics(new RamProvider({ maxBytes: 1024 * 1024 }));
    await provider.write('a', 'one');
    const { exportSnapshot } = provider;
    expect(provider.exportSnapshot).toBe(exportSnapshot);
    const dir = await mkdtemp(path.join(os.tmpdir(), 'kyozo-metrics-'));
    try {
      // Called detached from the layer: it only works bound to the RAM provider.
      await exportSnapshot(path.join(dir, 'snapshot'));
      expect((await stat(path.join(dir, 'snapshot'))).size).toBeGreaterThan(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("an observer that throws loses its metric, not the operation's outcome (session 11)", async () => {
    const ram = new RamProvider({ maxBytes: 1024 * 1024 });
    const measured = withMetrics(ram, () => {
      throw new Error('registry failure');
    });
    expect((await measured.write('k', 'v')).key).toBe('k');
    await expect(measured.stat('missing')).rejects.toBeInstanceOf(NotFoundError);
  });
});
