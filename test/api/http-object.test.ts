/** How an object's description becomes response headers. */
import { describe, expect, it } from 'vitest';
import { objectHeaders } from '../../src/api/http-object.js';
import type { ObjectInfo } from '../../src/providers/types.js';

const info: ObjectInfo = { key: 'k', size: 1, etag: 'e'.repeat(64), contentType: 'text/plain', metadata: {}, updatedAt: '2026-11-30T08:00:00.000Z' };

describe('objectHeaders', () => {
  it('sends a stored content type outside printable ASCII as application/octet-stream, not a 500 nor bytes that differ by method', () => {
    expect(objectHeaders({ ...info, contentType: 'text/plain; title="Preis in €"' })['Content-Type']).toBe('application/octet-stream');
    expect(objectHeaders({ ...info, contentType: 'text/plain\r\nSet-Cookie: a=b' })['Content-Type']).toBe('application/octet-stream');
    // Latin-1 is header bytes, but Node sent it as one byte on HEAD and as UTF-8 on a streamed GET.
    expect(objectHeaders({ ...info, contentType: 'text/plain; title="Straße"' })['Content-Type']).toBe('application/octet-stream');
    expect(objectHeaders({ ...info, contentType: 'text/plain; charset=utf-8;\ttitle="x"' })['Content-Type']).toBe('text/plain; charset=utf-8;\ttitle="x"');
  });

  it('names the hybrid tier that answered, on every answer built from it (HEAD and 304 come from a stat)', () => {
    expect(objectHeaders({ ...info, tier: 'backup' } as ObjectInfo)['X-Kyozo-Tier']).toBe('backup');
    expect(objectHeaders(info)).not.toHaveProperty('X-Kyozo-Tier');
  });
});
