/**
 * What arrives when `migrate` (versions: true) copies the awkward data set between provider kinds, and that
 * a second run changes nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrateJob } from '../../src/jobs/migrate.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { maintenanceFixture, type MaintenanceFixture } from './fixtures/maintenance.js';
import { expectedHistories, HISTORIES, seed, shortKey, snapshot, Stores, type Kind, type Snapshot, type VersionState } from './fidelity-support.js';

let f: MaintenanceFixture;
const stores = new Stores();
beforeAll(async () => {
  f = await maintenanceFixture('fidelity-migrate');
});
afterAll(async () => {
  await stores.close();
  await f?.close();
});

const PAIRS: [Kind, Kind][] = [
  ['disk', 'git'],
  ['s3', 'disk'],
  ['ram', 'hybrid'],
  ['hybrid', 'git'],
  ['s3v', 'ram'],
  ['ram', 's3v'],
  ['s3v', 'git'],
  ['disk', 's3'],
];
/** git -> s3 without the keys whose git write messages s3 cannot carry (see fidelity-refusals): the rest of the data set. */
const SHORT_KEY_PAIRS: [Kind, Kind][] = [
  ['git', 's3'],
  ['git', 's3v'],
  ['git', 'hybrid'],
];

const everyWrite = (store: StorageProvider) => store.capabilities.versioning === 'every-write';

/** A target history, as comparable to the source's: an every-write target may hold its own write's version after. */
function comparable(history: VersionState[]) {
  return history.map(({ etag, size, message, author, contentType, metadata }) => ({ etag, size, message, author, contentType, metadata }));
}

describe.each([...PAIRS.map(([a, b]) => [a, b, false] as const), ...SHORT_KEY_PAIRS.map(([a, b]) => [a, b, true] as const)])('migrate %s -> %s with versions (short keys only: %s)', (fromKind, toKind, shortOnly) => {
  it('the target holds the same keys, bytes, etags, types, metadata and histories; a second run changes nothing', async (t) => {
    const from = await stores.open(fromKind);
    const to = await stores.open(toKind);
    if (from === undefined || to === undefined) return t.skip();
    await seed(from, shortOnly ? shortKey : undefined);
    const source = await snapshot(from);
    // The source's histories are the data set's (its own writes' versions too on an every-write source).
    if (!everyWrite(from)) expect(source.versions).toEqual(expectedHistories());

    const ctx = () => f.context(new Map<string, StorageProvider>([['from', from], ['to', to]]));
    const first = (await migrateJob.handle({ from: 'from', to: 'to', versions: true }, ctx())).result;
    expect(first, JSON.stringify(first.failures)).toMatchObject({ objects: source.objects.length, failureCount: 0, conflictCount: 0, verified: true });

    const target = await snapshot(to);
    expect(target.objects).toEqual(source.objects);
    for (const key of Object.keys(HISTORIES)) {
      expect.soft(comparable(target.versions[key]!), `${fromKind}->${toKind} history of ${key}`).toEqual(comparable(source.versions[key]!));
    }

    const second = (await migrateJob.handle({ from: 'from', to: 'to', versions: true }, ctx())).result;
    expect(second).toMatchObject({ objects: source.objects.length, copied: 0, versions: 0, skipped: source.objects.length, conflictCount: 0, failureCount: 0 });
    const again: Snapshot = await snapshot(to);
    expect(again).toEqual(target);
  });
});
