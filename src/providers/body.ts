/**
 * Bodies in and out of providers: turning any `Body` into a stream, hashing content on its way through (the
 * etag is its sha256 on every provider), and byte ranges.
 */
import { createHash, hash, type Hash } from 'node:crypto';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { PayloadTooLargeError, RangeNotSatisfiableError, UnexpectedContentError } from './errors.js';
import type { Body, ByteRange } from './types.js';

/** One-shot `crypto.hash`: about half the cost of a `createHash` object for the small bodies most writes carry. */
export function sha256Hex(content: Uint8Array | string): string {
  return hash('sha256', content, 'hex');
}

/** A write's `expectedEtag`, if any, against the sha256 `etag` of the content that arrived (`what`: key or operation). */
export function requireExpectedEtag(what: string, expected: string | undefined, etag: string): void {
  if (expected !== undefined && expected !== etag) {
    throw new UnexpectedContentError(`${what}: the content's sha256 is ${etag}, not the expected ${expected} (it changed on its way)`, expected, etag);
  }
}

export function isReadable(body: Body): body is Readable {
  return body instanceof Readable;
}

export function toReadable(body: Body): Readable {
  if (isReadable(body)) return body;
  return Readable.from([typeof body === 'string' ? Buffer.from(body, 'utf8') : Buffer.from(body.buffer, body.byteOffset, body.byteLength)], {
    objectMode: false,
  });
}

/**
 * A pass-through that computes sha256 and size of everything that flows through it, and fails the stream with
 * `PayloadTooLargeError` as soon as more than `maxBytes` arrive (so an oversized body is never stored whole).
 */
export class HashingStream extends Transform {
  private readonly hash: Hash = createHash('sha256');
  private bytes = 0;
  private digest?: string;

  constructor(private readonly maxBytes = Number.POSITIVE_INFINITY) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.maxBytes) {
      callback(new PayloadTooLargeError(`body is larger than ${this.maxBytes} bytes`));
      return;
    }
    this.hash.update(chunk);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    this.digest = this.hash.digest('hex');
    callback();
  }

  get size(): number {
    return this.bytes;
  }

  /** Available once the stream has ended. */
  get etag(): string {
    if (this.digest === undefined) throw new Error('HashingStream: etag read before the stream ended');
    return this.digest;
  }
}

/**
 * Reads a whole body into a Buffer the caller owns (a Uint8Array is copied, so later changes by the writer cannot
 * reach stored content): for providers that keep content in memory (ram) and small inline bodies.
 */
export async function readAll(body: Body, maxBytes = Number.POSITIVE_INFINITY): Promise<Buffer> {
  if (!isReadable(body)) {
    const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : Buffer.from(body);
    if (bytes.length > maxBytes) throw new PayloadTooLargeError(`body is larger than ${maxBytes} bytes`);
    return bytes;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer | string>) {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    size += bytes.length;
    if (size > maxBytes) {
      body.destroy();
      throw new PayloadTooLargeError(`body is larger than ${maxBytes} bytes`);
    }
    chunks.push(bytes);
  }
  return Buffer.concat(chunks, size);
}

/**
 * Clamps an inclusive HTTP-style range to an object of `size` bytes. The end may run past the object (it is cut
 * to the last byte); a start at or past the end of the object cannot be satisfied.
 */
export function resolveRange(range: ByteRange, size: number): ByteRange {
  const [start, end] = range;
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end < start) {
    throw new RangeNotSatisfiableError(`invalid range ${start}-${end}`);
  }
  if (start >= size) throw new RangeNotSatisfiableError(`range starts at ${start}, object has ${size} bytes`);
  return [start, Math.min(end, size - 1)];
}

/** Reads a stream until it ends or passes `limit` bytes. `rest` continues it (head included) when it did not end. */
export async function readAhead(body: Readable, limit: number): Promise<{ head: Buffer; rest?: Readable }> {
  const iterator = (body as AsyncIterable<Buffer | string>)[Symbol.asyncIterator]();
  const chunks: Buffer[] = [];
  let size = 0;
  while (size <= limit) {
    const next = await iterator.next();
    if (next.done) return { head: Buffer.concat(chunks, size) };
    const chunk = typeof next.value === 'string' ? Buffer.from(next.value, 'utf8') : next.value;
    chunks.push(chunk);
    size += chunk.length;
  }
  async function* continued() {
    yield* chunks;
    for (;;) {
      const next = await iterator.next();
      if (next.done) return;
      yield next.value;
    }
  }
  const rest = Readable.from(continued(), { objectMode: false });
  // `rest` destroyed before its end (a write refused before reading it): the source goes with it.
  rest.once('close', () => {
    if (!body.readableEnded) body.destroy();
  });
  return { head: Buffer.alloc(0), rest };
}
