/** Each kind holds the data set as written: the baseline the cross-kind comparisons rely on. */
import { afterAll, describe, expect, it } from 'vitest';
import { expectedHistories, HISTORIES, OBJECTS, seed, snapshot, Stores, type Kind } from './fidelity-support.js';
import { sha256Hex } from '../../src/providers/body.js';

const stores = new Stores();
afterAll(() => stores.close());

describe.each<Kind>(['ram', 'disk', 'git', 's3', 's3v', 'hybrid'])('%s holds the data set', (kind) => {
  it('as written', async (t) => {
    const store = await stores.open(kind);
    if (store === undefined) return t.skip();
    await seed(store);
    const snap = await snapshot(store);
    const byKey = new Map(snap.objects.map((o) => [o.key, o]));
    const problems: string[] = [];
    for (const object of OBJECTS) {
      const got = byKey.get(object.key);
      if (got === undefined) { problems.push(`missing ${JSON.stringify(object.key)}`); continue; }
      const want = { etag: sha256Hex(object.body), contentType: object.contentType ?? 'application/octet-stream', metadata: object.metadata ?? {} };
      if (got.etag !== want.etag || got.bytesEtag !== want.etag) problems.push(`etag ${object.key}`);
      if (got.contentType !== want.contentType) problems.push(`type ${object.key}: ${got.contentType}`);
      if (JSON.stringify(got.metadata) !== JSON.stringify(want.metadata)) problems.push(`meta ${object.key}: ${JSON.stringify(got.metadata)}`);
    }
    for (const key of Object.keys(HISTORIES)) {
      const got = snap.versions[key]!;
      const want = expectedHistories()[key]!;
      // every-write stores also record plain writes; createVersion alone was used on these keys
      expect.soft(got, `${kind} ${key}`).toEqual(want);
    }
    expect(problems).toEqual([]);
    expect(snap.objects.length).toBe(OBJECTS.length + Object.keys(HISTORIES).length);
  });
});
