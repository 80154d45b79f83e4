/**
 * User metadata rules shared by every provider, shaped by the strictest backend (S3: names are case-insensitive
 * header names, 2 KiB in all). Names are lower-cased here so `X-Meta-Owner` and `x-meta-owner` are one entry.
 */
import { InvalidArgumentError } from './errors.js';
import { DEFAULT_CONTENT_TYPE, type WriteOptions } from './types.js';

export const MAX_METADATA_BYTES = 2048;
const NAME = /^[a-z0-9][a-z0-9_-]*$/;
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/;

/** Names and values in UTF-8 bytes, as S3 counts its 2 KiB. */
export function metadataBytes(metadata: Record<string, string>): number {
  let bytes = 0;
  for (const [name, value] of Object.entries(metadata)) bytes += Buffer.byteLength(name) + Buffer.byteLength(value);
  return bytes;
}

export function normalizeMetadata(metadata: Record<string, string> | undefined): Record<string, string> {
  const normalized: Record<string, string> = {};
  for (const [rawName, value] of Object.entries(metadata ?? {})) {
    const name = rawName.toLowerCase();
    if (!NAME.test(name)) throw new InvalidArgumentError(`metadata name "${rawName}" must start with a letter or digit, then letters, digits, '-' or '_'`);
    if (typeof value !== 'string' || CONTROL_CHARACTER.test(value)) {
      throw new InvalidArgumentError(`metadata "${name}" must be a string without control characters`);
    }
    normalized[name] = value;
  }
  if (metadataBytes(normalized) > MAX_METADATA_BYTES) throw new InvalidArgumentError(`metadata is larger than ${MAX_METADATA_BYTES} bytes`);
  return normalized;
}

/** What an HTTP header value can carry: its bytes are Latin-1, so nothing above U+00FF. */
const NOT_A_HEADER_CHARACTER = /[^\u0000-\u00ff]/;

export function normalizeContentType(contentType: string | undefined): string {
  if (contentType === undefined || contentType.trim() === '') return DEFAULT_CONTENT_TYPE;
  if (CONTROL_CHARACTER.test(contentType) || NOT_A_HEADER_CHARACTER.test(contentType) || contentType.length > 256) {
    // Served as a Content-Type header on every read: text a header cannot carry would make each read fail.
    throw new InvalidArgumentError('contentType must be a short string a header can carry: no control characters, nothing above U+00FF');
  }
  return contentType.trim();
}

/** What a write records besides the content: validated once, the same on every provider. */
export function describeWrite(opts: WriteOptions | undefined): { contentType: string; metadata: Record<string, string> } {
  return { contentType: normalizeContentType(opts?.contentType), metadata: normalizeMetadata(opts?.metadata) };
}
