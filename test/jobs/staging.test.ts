import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { applyBody, bodyRefSchema, createStaging, type Staging } from '../../src/jobs/staging.js';
import { quietLog } from './fixtures/pipeline.js';
import { readAll, sha256Hex } from '../../src/providers/body.js';
import { DiskProvider } from '../../src/providers/disk.js';
import { InvalidArgumentError, PayloadTooLargeError, PreconditionFailedError } from '../../src/providers/errors.js';

const INLINE_MAX = 1024;

function chunked(content: Buffer, size = 100): Readable {
  const chunks: Buffer[] = [];
  for (let offset = 0; offset < content.length; offset += size) chunks.push(content.subarray(offset, offset + size));
  return Readable.from(chunks);
}

describe('staging', () => {
  let dir: string;
  let provider: DiskProvider;
  let staging: Staging;

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'kyozo-staging-'));
    provider = new DiskProvider({ root: dir, fsync: false });
    staging = createStaging({ provider, inlineMax: INLINE_MAX });
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps a body of exactly STAGING_INLINE_MAX bytes inline, from a buffer or a stream', async () => {
    const content = Buffer.alloc(INLINE_MAX, 1);
    for (const body of [content, chunked(content)]) {
      const ref = await staging.stageBody(body);
      expect(ref).toEqual({ inline: content.toString('base64'), size: INLINE_MAX, etag: sha256Hex(content) });
    }
    expect((await provider.list()).items).toHaveLength(0);
  });

  it('stages a body one byte over the limit and gives it back whole', async () => {
    const content = Buffer.alloc(INLINE_MAX + 1, 2);
    const ref = await staging.stageBody(chunked(content));
    expect(ref).toMatchObject({ size: INLINE_MAX + 1, etag: sha256Hex(content) });
    expect('stagedKey' in ref && ref.stagedKey).toMatch(/^staging\/[0-9a-f-]{36}$/);
    expect(await readAll(await staging.open(ref))).toEqual(content);
    await staging.release(ref);
    await staging.release(ref);
    expect((await provider.list()).items).toHaveLength(0);
  });

  it('refuses a stream over maxBytes and leaves no staged blob', async () => {
    const content = Buffer.alloc(INLINE_MAX * 4, 3);
    await expect(staging.stageBody(chunked(content), { maxBytes: INLINE_MAX * 2 })).rejects.toBeInstanceOf(PayloadTooLargeError);
    await expect(staging.stageBody(chunked(content.subarray(0, 500)), { maxBytes: 100 })).rejects.toBeInstanceOf(PayloadTooLargeError);
    expect((await provider.list()).items).toHaveLength(0);
  });

  it('rejects an inline body whose size disagrees with the job (its etag is checked where it is stored)', async () => {
    await expect(staging.open({ inline: 'aGVsbG8=', size: 4, etag: sha256Hex('hello') })).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  it('checks an inline body\'s size on the bytes it decodes to, small or larger than the reused decode buffer', async () => {
    const large = Buffer.alloc(100 * 1024, 7); // over the 64 KiB decoded into the shared buffer
    for (const content of [Buffer.from('hello'), large]) {
      const text = content.toString('base64');
      const wrapped = text.replace(/(.{76})/g, '$1\n'); // MIME line breaks: skipped by the decoder
      for (const inline of [text, wrapped]) {
        const ref = { inline, size: content.length, etag: sha256Hex(content) };
        expect(bodyRefSchema.safeParse(ref).success).toBe(true);
        expect(await readAll(await staging.open(ref))).toEqual(content);
        expect(bodyRefSchema.safeParse({ ...ref, size: content.length + 1 }).success).toBe(false);
        expect(bodyRefSchema.safeParse({ ...ref, size: content.length - 1 }).success).toBe(false);
      }
    }
    // One byte beyond what its text can hold is refused without decoding it into a buffer that large.
    expect(bodyRefSchema.safeParse({ inline: 'aGVsbG8=', size: 2 ** 40, etag: sha256Hex('hello') }).success).toBe(false);
  });

  it('closes a staged body that the apply step failed without reading', async () => {
    const ref = await staging.stageBody(chunked(Buffer.alloc(INLINE_MAX * 2, 4)));
    let given: Readable | undefined;
    const refused = applyBody(
      { staging, log: quietLog },
      ref,
      async (body) => {
        given = body as Readable;
        throw new PreconditionFailedError('etag does not match');
      },
      async () => undefined,
    );
    await expect(refused).rejects.toBeInstanceOf(PreconditionFailedError);
    expect(given?.destroyed).toBe(true);
  });
});
