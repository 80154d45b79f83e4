/**
 * Hybrid's hot tier in one process (`HotTier`): its byte budget holds while admissions run side by side.
 */
import { describe, expect, it } from 'vitest';
import { sha256Hex } from '../../src/providers/body.js';
import { HotTier } from '../../src/providers/hybrid-hot.js';
import { RamProvider } from '../../src/providers/ram.js';
import type { ObjectInfo } from '../../src/providers/types.js';

function described(key: string, content: Buffer): ObjectInfo {
  return { key, size: content.length, etag: sha256Hex(content), contentType: 'application/octet-stream', metadata: {}, updatedAt: new Date().toISOString() };
}

describe('hot tier budget', () => {
  it('admissions in flight count against maxBytes: those that cannot fit are refused', async () => {
    const provider = new RamProvider({ maxBytes: 1024 * 1024 }); // larger than the tier's budget, as allowed
    const hot = new HotTier({ provider, maxBytes: 1000, maxEntryBytes: 100, ttlMs: 60_000 });
    const content = Buffer.alloc(100, 'x');
    const admitted = await Promise.all(
      Array.from({ length: 20 }, (_, i) => hot.admit(`obj/${i}`, described(`obj/${i}`, content), content, hot.mark())),
    );
    expect(admitted.filter(Boolean)).toHaveLength(10);
    expect(hot.objects).toBe(10);
    expect(hot.bytes).toBe(1000);
    expect((await provider.stats()).bytes).toBe(1000);
  });

});
