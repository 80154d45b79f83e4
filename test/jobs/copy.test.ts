/**
 * The `copy` job's handler called directly, as a first run and as a retry: it copies what the request pinned (the
 * source's etag), and a retry that finds its copy made takes the work as done.
 */
import { describe, expect, it } from 'vitest';
import type { EventBus } from '../../src/events/bus.js';
import { copyJob, type CopyPayload } from '../../src/jobs/copy-object.js';
import type { JobContext } from '../../src/jobs/definition.js';
import { createStaging } from '../../src/jobs/staging.js';
import { sha256Hex } from '../../src/providers/body.js';
import { PreconditionFailedError } from '../../src/providers/errors.js';
import { RamProvider } from '../../src/providers/ram.js';
import { quietLog } from './fixtures/pipeline.js';

function setup() {
  const from = new RamProvider({ maxBytes: 1024 * 1024 });
  const to = new RamProvider({ maxBytes: 1024 * 1024 });
  const ctx = (attemptsStarted: number): JobContext => ({
    stores: new Map([
      ['from', from],
      ['to', to],
    ]),
    staging: createStaging({ provider: new RamProvider({ maxBytes: 1024 }), inlineMax: 16 }),
    bus: {} as EventBus,
    log: quietLog,
    job: { id: 'objects-copy', name: 'copy', timestamp: Date.now(), attemptsStarted },
  });
  const payload = (etag: string, extra: Partial<CopyPayload> = {}): CopyPayload => ({
    store: 'to',
    key: 'copy',
    source: { store: 'from', key: 'original', etag },
    contentType: 'text/plain',
    metadata: { owner: 'ada' },
    ...extra,
  });
  return { from, to, ctx, payload };
}

describe('copy job', () => {
  it('copies the content with the description it was given, and emits object.written for the target', async () => {
    const { from, to, ctx, payload } = setup();
    const source = await from.write('original', 'the content', { contentType: 'text/csv' });
    const { result, event } = await copyJob.handle(payload(source.etag), ctx(1));
    expect(result).toMatchObject({ key: 'copy', etag: source.etag, contentType: 'text/plain', metadata: { owner: 'ada' } });
    expect(event).toEqual({ type: 'object.written', store: 'to', key: 'copy', data: result });
    expect(await to.stat('copy')).toEqual(result);
  });

  it('copies an older version by its id', async () => {
    const { from, to, ctx, payload } = setup();
    const old = await from.createVersion('original', 'old content', { message: 'old' });
    await from.write('original', 'new content');
    await copyJob.handle(payload(old.etag, { source: { store: 'from', key: 'original', etag: old.etag, versionId: old.versionId } }), ctx(1));
    expect((await to.stat('copy')).etag).toBe(sha256Hex(Buffer.from('old content')));
  });

  it('a source replaced or deleted since the request fails the job as a precondition, and writes nothing', async () => {
    const { from, to, ctx, payload } = setup();
    const asked = await from.write('original', 'asked for');
    await from.write('original', 'replaced');
    await expect(copyJob.handle(payload(asked.etag), ctx(1))).rejects.toThrow(PreconditionFailedError);
    await expect(copyJob.handle(payload(asked.etag), ctx(1))).rejects.toThrow(/changed since the copy was asked for/);
    await from.delete('original');
    await expect(copyJob.handle(payload(asked.etag), ctx(1))).rejects.toThrow(/gone since the copy was asked for/);
    expect((await to.list()).items).toEqual([]);
  });

  it('a retry that finds its copy made is done, also when the source is gone by then or If-None-Match: * now fails', async () => {
    const { from, to, ctx, payload } = setup();
    const source = await from.write('original', 'the content');
    const createOnly = payload(source.etag, { ifNoneMatch: '*' });
    const first = await copyJob.handle(createOnly, ctx(1));
    expect((await copyJob.handle(createOnly, ctx(2))).result).toEqual(first.result);
    await from.delete('original');
    expect((await copyJob.handle(createOnly, ctx(2))).result).toEqual(first.result);
    // A first run is not a retry: the target already there is a failed create-only copy, not this job's.
    await expect(copyJob.handle(createOnly, ctx(1))).rejects.toThrow(PreconditionFailedError);
    // Another object of the same bytes under other metadata is not taken for this copy.
    await to.write('copy', 'the content', { contentType: 'text/plain', metadata: { owner: 'someone else' } });
    await expect(copyJob.handle(createOnly, ctx(2))).rejects.toThrow(PreconditionFailedError);
  });
});
