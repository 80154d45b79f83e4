/**
 * `migrate` around the cutover: a source write that lands while the backfill copies its key is carried over, the
 * application's writes into the target stay conflicts, and the target's own failures are reported as the target's.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrateJob } from '../../src/jobs/migrate.js';
import { sha256Hex } from '../../src/providers/body.js';
import { DiskProvider } from '../../src/providers/disk.js';
import { NotFoundError } from '../../src/providers/errors.js';
import { RamProvider } from '../../src/providers/ram.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { interceptMethod } from '../support/intercept.js';
import { maintenanceFixture, type MaintenanceFixture } from './fixtures/maintenance.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const ram = () => new RamProvider({ maxBytes: 1024 * 1024 });

/** `from` where the application saves `key` again (`content`) once, just after the backfill has read it. */
function rewrittenWhileCopied(from: StorageProvider, key: string, content: string): StorageProvider {
  let saved = false;
  return interceptMethod(from, 'read', (read) => async (name, opts) => {
    const result = await read(name, opts);
    if (!saved && name === key) {
      saved = true;
      await from.write(key, content);
      await sleep(5); // a large object streams for a while: its copy lands well after the source's write
    }
    return result;
  });
}

let f: MaintenanceFixture;

beforeAll(async () => {
  f = await maintenanceFixture('migrate-review');
});

afterAll(async () => {
  await f?.close();
});

describe('migrate around the cutover', () => {
  it('a final pass carries over a change the source took while the backfill was copying that key', async () => {
    const from = ram();
    const to = ram();
    await from.write('report', 'draft');
    const backfill = await migrateJob.handle(
      { from: 'from', to: 'to' },
      f.context(new Map<string, StorageProvider>([['from', rewrittenWhileCopied(from, 'report', 'final')], ['to', to]])),
    );
    expect(backfill.result).toMatchObject({ copied: 1, verified: true });

    const final = await migrateJob.handle({ from: 'from', to: 'to' }, f.context(new Map<string, StorageProvider>([['from', from], ['to', to]])));
    expect(final.result).toMatchObject({ conflictCount: 0, verified: true });
    expect((await to.stat('report')).etag).toBe(sha256Hex('final'));
  });

  it("an application write into the target just after the backfill's copy landed is kept, and reported as a conflict", async () => {
    const from = ram();
    const target = ram();
    await from.write('report', 'draft');
    let cutover = false;
    // The application, already pointed at the target, saves the report there right after the backfill copied it.
    const to = interceptMethod(target, 'write', (write) => async (key, body, opts) => {
      const written = await write(key, body, opts);
      if (!cutover) {
        cutover = true;
        await sleep(5);
        await target.write(key, 'written by the application');
      }
      return written;
    });
    const stores = new Map<string, StorageProvider>([['from', rewrittenWhileCopied(from, 'report', 'final')], ['to', to]]);
    await migrateJob.handle({ from: 'from', to: 'to' }, f.context(stores));

    const final = await migrateJob.handle({ from: 'from', to: 'to' }, f.context(new Map<string, StorageProvider>([['from', from], ['to', target]])));
    expect(final.result).toMatchObject({ copied: 0, conflictCount: 1, conflicts: [expect.objectContaining({ key: 'report' })] });
    expect((await target.stat('report')).etag).toBe(sha256Hex('written by the application'));
  });

  it('a source object that changes during every copy of it is reported: the target holds an earlier state', async () => {
    const source = ram();
    await source.write('ticker', 'save 0');
    let saves = 0;
    const from = interceptMethod(source, 'read', (read) => async (key, opts) => {
      const result = await read(key, opts);
      await source.write(key, `save ${++saves}`);
      return result;
    });
    const to = ram();
    const { result } = await migrateJob.handle({ from: 'from', to: 'to' }, f.context(new Map<string, StorageProvider>([['from', from], ['to', to]])));
    expect(result).toMatchObject({ copied: 1, verified: false, failureCount: 1, failures: [expect.objectContaining({ key: 'ticker' })] });
    expect(saves).toBeGreaterThan(1);
    expect((await to.stat('ticker')).etag).toBe(sha256Hex(`save ${saves - 1}`));
  });

  it("a target object damaged where it is stored is reported as the target's, the other objects are copied", async () => {
    const from = ram();
    await from.write('a', 'fine');
    await from.write('b', 'cannot replace a damaged record');
    const root = await f.tempDir('migrate-damaged-target');
    const to = new DiskProvider({ root, fsync: false });
    await to.write('b', 'older');
    await writeFile(path.join(root, 'objects', 'b~'), 'cut'); // a record cut short: the disk store refuses to stat it
    const { result } = await migrateJob.handle({ from: 'from', to: 'to' }, f.context(new Map<string, StorageProvider>([['from', from], ['to', to]])));
    expect(result).toMatchObject({ copied: 1, verified: false, failureCount: 1 });
    expect(result.failures[0]).toMatchObject({ key: 'b', reason: expect.stringMatching(/target/) });
    await to.close();
  });

  it('a source object deleted after it was listed is left out without a failure', async () => {
    const source = ram();
    await source.write('kept', 'kept');
    await source.write('gone', 'deleted by the application');
    const from = interceptMethod(source, 'read', (read) => async (key, opts) => {
      if (key === 'gone') await source.delete(key);
      return read(key, opts);
    });
    const to = ram();
    const { result } = await migrateJob.handle({ from: 'from', to: 'to' }, f.context(new Map<string, StorageProvider>([['from', from], ['to', to]])));
    expect(result).toMatchObject({ objects: 2, copied: 1, verified: true, failureCount: 0, conflictCount: 0 });
    expect((await to.list()).items.map((info) => info.key)).toEqual(['kept']);
  });

  it('a target that answers a write with NOT_FOUND reports the key as a failure: the object was not deleted from the source', async () => {
    const from = ram();
    await from.write('report', 'final');
    // A git store whose branch was removed answers every write so.
    const to = interceptMethod(ram(), 'write', () => async () => {
      throw new NotFoundError('branch "main" does not exist');
    });
    const { result } = await migrateJob.handle({ from: 'from', to: 'to' }, f.context(new Map<string, StorageProvider>([['from', from], ['to', to]])));
    expect(result).toMatchObject({ objects: 1, copied: 0, verified: false, failureCount: 1 });
    expect(result.failures[0]).toMatchObject({ key: 'report', reason: expect.stringContaining('the target answered') });
  });

  it('a key the source replaces (delete, then write) while it is read is left out, as any object changed meanwhile; the rest is copied', async () => {
    const from = ram();
    const to = ram();
    for (let i = 0; i < 10; i++) await from.write(`doc/${i}`, `content ${i}`);
    let replaced = false;
    const live = interceptMethod(from, 'read', (read) => async (key, opts) => {
      if (replaced || key !== 'doc/5') return read(key, opts);
      replaced = true;
      await from.delete(key); // the application replaces the object: delete...
      try {
        return await read(key, opts); // ...the backfill reads in between: NOT_FOUND...
      } finally {
        await from.write(key, 'content 5, replaced'); // ...then it is written again
      }
    });
    const { result } = await migrateJob.handle({ from: 'from', to: 'to' }, f.context(new Map<string, StorageProvider>([['from', live], ['to', to]])));
    expect(result).toMatchObject({ objects: 10, copied: 9, failureCount: 0 });
    expect((await to.list({ prefix: 'doc/' })).items.map((item) => item.key)).not.toContain('doc/5');
  });
});
