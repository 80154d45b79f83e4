/**
 * Hybrid's hot tier in one process (`HotTier`): its byte budget holds while admissions run side by side.
 */
import { describe, expect, it } from 'vitest';
import { sha256Hex } from '../../src/providers/body.js';
import { HotTier } from '../../src/providers/hybrid-hot.js';
import { ENTRY_OVERHEAD_BYTES, RamProvider } from '../../src/providers/ram.js';
import type { ObjectInfo } from '../../src/providers/types.js';

function described(key: string, content: Buffer): ObjectInfo {
  return { key, size: content.length, etag: sha256Hex(content), contentType: 'application/octet-stream', metadata: {}, updatedAt: new Date().toISOString() };
}

describe('hot tier budget', () => {
  it('admissions in flight count against maxBytes: those that cannot fit are refused', async () => {
    const provider = new RamProvider({ maxBytes: 1024 * 1024 }); // larger than the tier's budget, as allowed
    const content = Buffer.alloc(100, 'x');
    const key = (i: number) => `obj/${String(i).padStart(2, '0')}`;
    const charge = new HotTier({ provider, maxBytes: 1, ttlMs: 1 }).charge(key(0), described(key(0), content));
    expect(charge).toBeGreaterThan(content.length + ENTRY_OVERHEAD_BYTES); // the key and type count too
    const hot = new HotTier({ provider, maxBytes: 10 * charge, maxEntryBytes: 100, ttlMs: 60_000 });
    const admitted = await Promise.all(Array.from({ length: 20 }, (_, i) => hot.admit(key(i), described(key(i), content), content, hot.mark())));
    expect(admitted.filter(Boolean)).toHaveLength(10);
    expect(hot.objects).toBe(10);
    expect(hot.bytes).toBe(10 * charge);
    expect((await provider.stats()).bytes).toBe(1000);
  });

  it('a ram store with exactly the tier\'s budget (as a hybrid makes it) takes every copy the tier admits, and the LRU rule goes on', async () => {
    const maxBytes = 64 * 1024;
    const provider = new RamProvider({ maxBytes });
    const hot = new HotTier({ provider, maxBytes, ttlMs: 3_600_000 });
    const content = Buffer.alloc(1024, 1);
    const admit = (key: string) => hot.admit(key, described(key, content), content, hot.mark());
    for (let i = 0; i < 64; i++) expect(await admit(`obj/${i}`), `obj/${i}`).toBe(true);
    for (let i = 0; i < 20; i++) expect(await admit(`new/${i}`), `new/${i}`).toBe(true); // newly hot keys still get in
    expect(hot.counters.demotions.lru).toBeGreaterThan(20);
    const held = (await provider.stats()).detail as { usedBytes: number };
    expect(held.usedBytes).toBe(hot.bytes); // the tier and its store agree on what it holds
    expect(hot.bytes).toBeLessThanOrEqual(maxBytes);
    expect(hot.has('new/19')).toBe(true);
    expect(hot.has('obj/0')).toBe(false); // the least recently read went first
  });

  it('a copy whose metadata no store takes (an object another tool put into cold) is not admitted, and admit does not reject', async () => {
    const hot = new HotTier({ provider: new RamProvider({ maxBytes: 1024 * 1024 }), maxBytes: 64 * 1024, ttlMs: 3_600_000 });
    const content = Buffer.from('hello');
    const info = { ...described('report.txt', content), metadata: { 'file.name': 'report.txt' } };
    expect(await hot.admit('report.txt', info, content, hot.mark())).toBe(false);
    expect(hot.has('report.txt')).toBe(false);
    expect(hot.bytes).toBe(0);
  });
});
