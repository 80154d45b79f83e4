/**
 * `cutToRange`: whatever range an S3-compatible endpoint sends for a ranged GET, the reader gets the bytes it asked
 * for, or an error; never other bytes as the range.
 */
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ProviderUnavailableError } from '../../src/providers/errors.js';
import { cutToRange } from '../../src/providers/s3-range.js';

const CONTENT = '0123456789abcdef';
/** What an endpoint sends: `text` in chunks of three bytes, so cuts fall inside and across chunks. */
const sent = (text: string) => Readable.from(Buffer.from(text).toString().match(/.{1,3}/g)!.map((part) => Buffer.from(part)));

async function text(body: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString();
}

describe('cutToRange', () => {
  it('passes an exact answer on as it is', () => {
    const body = sent('456');
    expect(cutToRange(body, 'bytes 4-6/16', 16, [4, 6], 'read')).toBe(body);
    const tail = sent('ef');
    expect(cutToRange(tail, 'bytes 14-15/16', 16, [14, 100], 'read')).toBe(tail);
  });

  it('cuts a wider answer, or the whole object sent without Content-Range, to the range', async () => {
    for (const [start, end] of [[0, 0], [1, 1], [2, 7], [4, 4], [15, 15], [10, 40]] as const) {
      const want = CONTENT.slice(start, end + 1);
      expect(await text(cutToRange(sent(CONTENT), undefined, 16, [start, end], 'read')), `whole for ${start}-${end}`).toBe(want);
      expect(await text(cutToRange(sent(CONTENT), 'bytes 0-15/16', 16, [start, end], 'read')), `0-15 for ${start}-${end}`).toBe(want);
    }
    expect(await text(cutToRange(sent(CONTENT.slice(2, 9)), 'bytes 2-8/16', 16, [3, 5], 'read'))).toBe('345');
  });

  it('fails a wider answer that ends before the range does, rather than passing a short range on as whole', async () => {
    await expect(text(cutToRange(sent(CONTENT.slice(0, 5)), undefined, 16, [2, 9], 'read "k"'))).rejects.toThrow(ProviderUnavailableError);
    await expect(text(cutToRange(sent(CONTENT.slice(0, 5)), 'bytes 0-15/16', 16, [0, 9], 'read "k"'))).rejects.toThrow(/ended 5 bytes before/);
  });

  it('a cut range ends as a whole stream: a web stream made of it (as a GET answer is) closes', async () => {
    const web = Readable.toWeb(cutToRange(sent(CONTENT), undefined, 16, [0, 0], 'read "k"')) as ReadableStream<Uint8Array>;
    const reader = web.getReader();
    const chunks: Uint8Array[] = [];
    const read = async () => {
      for (let next = await reader.read(); !next.done; next = await reader.read()) chunks.push(next.value);
      return 'closed';
    };
    expect(await Promise.race([read(), new Promise((resolve) => setTimeout(resolve, 2_000, 'still open'))])).toBe('closed');
    expect(Buffer.concat(chunks).toString()).toBe('0');
  });

  it("lets the endpoint's answer go when its reader lets the range go", async () => {
    const endless = new Readable({ read() { setTimeout(() => this.push(Buffer.alloc(1024, 'x')), 1); } });
    const cut = cutToRange(endless, undefined, 1e12, [0, 1e11], 'read "k"');
    await new Promise((resolve) => cut.once('data', resolve));
    cut.destroy();
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(endless.destroyed).toBe(true);
  });

  it('refuses an answer that misses part of the range, or that it cannot read', () => {
    for (const served of ['bytes 5-9/16', 'bytes 0-3/16', 'bytes */16', 'items 0-15/16']) {
      const body = sent(CONTENT);
      expect(() => cutToRange(body, served, 16, [4, 6], 'read "k"'), served).toThrow(ProviderUnavailableError);
      expect(body.destroyed).toBe(true);
    }
  });
});
