/**
 * The ram store's byte budget (`RAM_MAX_BYTES`) counts everything an object or version holds — key, content type,
 * metadata, a version's message and author, and a fixed overhead per entry — not only its content: empty versions
 * with long keys and messages once grew the heap without bound while the budget counted 0 bytes.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { StorageFullError } from '../../src/providers/errors.js';
import { ENTRY_OVERHEAD_BYTES, RamProvider } from '../../src/providers/ram.js';

const BUDGET = 1024 * 1024;
const longKey = (i: number) => `${'k'.repeat(1000)}/${i}`;
const heavy = { metadata: { a: 'v'.repeat(2000) }, message: 'm'.repeat(4096), author: { name: 'n'.repeat(100), email: 'e@example.com' } };
const temps: string[] = [];

afterAll(async () => {
  await Promise.all(temps.map((dir) => rm(dir, { recursive: true, force: true })));
});

async function usedBytes(ram: RamProvider): Promise<number> {
  return (await ram.stats()).detail!.usedBytes as number;
}

/** Empty versions of new long keys until the store is full; how many fitted. */
async function fillWithEmptyVersions(ram: RamProvider, upTo: number): Promise<number> {
  for (let i = 0; i < upTo; i++) {
    const refused = await ram.createVersion(longKey(i), '', heavy).then(
      () => undefined,
      (error: unknown) => error,
    );
    if (refused !== undefined) {
      expect(refused).toBeInstanceOf(StorageFullError);
      return i;
    }
  }
  return upTo;
}

describe('the ram budget counts keys, metadata, messages and authors', () => {
  it('empty versions with long keys, metadata and messages fill the budget and then fail with StorageFullError', async () => {
    const ram = new RamProvider({ maxBytes: BUDGET });
    // Each version and its current object hold about 10 KiB besides their (empty) content: about 100 fit in 1 MiB.
    const fitted = await fillWithEmptyVersions(ram, 3_000);
    expect(fitted).toBeGreaterThan(0);
    expect(fitted).toBeLessThan(3_000);
    expect(await usedBytes(ram)).toBeGreaterThan(BUDGET - 2 * (ENTRY_OVERHEAD_BYTES + 8_000));
    expect(await usedBytes(ram)).toBeLessThanOrEqual(BUDGET);
    await expect(ram.write(longKey(fitted), '', { metadata: heavy.metadata })).rejects.toBeInstanceOf(StorageFullError);
  });

  it('every entry costs at least the fixed overhead: empty objects with short keys fill the budget too', async () => {
    const ram = new RamProvider({ maxBytes: 100 * ENTRY_OVERHEAD_BYTES });
    let written = 0;
    while (written < 1_000 && (await ram.write(`k${written}`, '').then(() => true, () => false))) written++;
    expect(written).toBeLessThan(100);
  });

  it('what a write charged is freed when it is replaced or deleted, versions included', async () => {
    const ram = new RamProvider({ maxBytes: BUDGET });
    await ram.write(longKey(1), 'x', { metadata: heavy.metadata });
    await ram.write(longKey(1), 'replaced by a longer body', { metadata: { b: 'w' } });
    const first = await ram.createVersion(longKey(2), 'one', heavy);
    await ram.createVersion(longKey(2), 'two', { message: 'short' });
    await ram.restoreVersion(longKey(2), first.versionId, { author: heavy.author });
    await ram.deleteVersion(longKey(2), first.versionId);
    expect(await usedBytes(ram)).toBeGreaterThan(0);
    await ram.delete(longKey(1));
    await ram.delete(longKey(2), { allVersions: true });
    expect(await usedBytes(ram)).toBe(0);
  });

  it('a snapshot counts on import what the store counted at export, and a smaller budget refuses it', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'kyozo-ram-budget-'));
    temps.push(dir);
    const source = new RamProvider({ maxBytes: BUDGET });
    for (let i = 0; i < 20; i++) await source.createVersion(longKey(i), '', heavy);
    await source.write(longKey(100), 'current only', { metadata: heavy.metadata });
    const file = path.join(dir, 'snap.ndjson');
    await source.exportSnapshot(file);

    const target = new RamProvider({ maxBytes: BUDGET });
    await target.importSnapshot(file);
    expect(await usedBytes(target)).toBe(await usedBytes(source));
    // 21 entries of several KiB each, with almost no content.
    await expect(new RamProvider({ maxBytes: 64 * 1024 }).importSnapshot(file)).rejects.toBeInstanceOf(StorageFullError);
  });
});
