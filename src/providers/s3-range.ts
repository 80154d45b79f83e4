/**
 * The bytes an S3 endpoint sent for a ranged GET, checked against the range asked for. S3 and MinIO send exactly
 * that range (`Content-Range: bytes <start>-<end>/<size>`); some S3-compatible servers do not (s3rver answers
 * `bytes=0-0` with the whole object, as a 206). Passed on as they came, other bytes would reach the client as the
 * range it asked for: an answer wider than the range is cut to it here, and one that misses part of it is refused.
 */
import { Transform, type Readable } from 'node:stream';
import { ProviderUnavailableError } from './errors.js';
import type { ByteRange } from './types.js';

const CONTENT_RANGE = /^bytes (\d+)-(\d+)\/(?:\d+|\*)$/;

/** `body` holding exactly `asked` (its end cut to the object's `size`), whatever range the endpoint sent. */
export function cutToRange(body: Readable, contentRange: string | undefined, size: number, asked: ByteRange, what: string): Readable {
  const [start, end] = [asked[0], Math.min(asked[1], size - 1)];
  // No Content-Range: the endpoint ignored the Range and sent the whole object.
  const parts = contentRange === undefined ? ['', '0', String(size - 1)] : CONTENT_RANGE.exec(contentRange);
  const served: ByteRange | undefined = parts === null ? undefined : [Number(parts[1]), Number(parts[2])];
  if (served !== undefined && served[0] === start && served[1] === end) return body;
  if (served === undefined || served[0] > start || served[1] < end) {
    body.destroy();
    throw new ProviderUnavailableError(`${what}: the S3 endpoint answered ${contentRange ?? 'the whole object'} for bytes ${start}-${end}`);
  }
  let skip = start - served[0];
  let left = end - start + 1;
  const cut = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      let part = chunk.subarray(Math.min(skip, chunk.length));
      skip -= chunk.length - part.length;
      part = part.subarray(0, left);
      left -= part.length;
      if (part.length > 0) this.push(part);
      if (left === 0 && skip === 0) {
        // The range is complete: what else the endpoint sends is not wanted.
        this.push(null);
        body.unpipe(cut);
        body.destroy();
        // Its writable side ends too: else the stream never finishes, and a web stream made of it never closes.
        this.end();
      }
      callback();
    },
    flush(callback) {
      // The answer ended before the range did: a short range passed on as whole would be a torn read.
      callback(left > 0 ? new ProviderUnavailableError(`${what}: the S3 endpoint's answer ended ${left} bytes before the range did`) : null);
    },
  });
  body.once('error', (error) => cut.destroy(error));
  // A reader that lets the range go lets the endpoint's answer go too: its connection is one of a pool's.
  cut.once('close', () => body.destroy());
  return body.pipe(cut);
}
