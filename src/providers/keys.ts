/**
 * Object keys (DESIGN §4): UTF-8, 1..1024 bytes, `/`-separated segments. Every provider calls `validateKey`
 * before touching its backend, so a key means the same thing on every store.
 */
import { InvalidKeyError } from './errors.js';

export const MAX_KEY_BYTES = 1024;

// C0 controls, DEL and C1 controls: invisible in logs and paths, and NUL truncates C strings.
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f-\u009f]/;
// A lone surrogate has no UTF-8 encoding: Buffer.from would silently turn it into U+FFFD, a different key.
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

function checkCharacters(value: string, what: string): void {
  if (value.includes('\\')) throw new InvalidKeyError(`${what} must not contain a backslash`);
  if (CONTROL_CHARACTER.test(value)) throw new InvalidKeyError(`${what} must not contain control characters`);
  if (LONE_SURROGATE.test(value)) throw new InvalidKeyError(`${what} is not valid Unicode`);
  if (Buffer.byteLength(value, 'utf8') > MAX_KEY_BYTES) {
    throw new InvalidKeyError(`${what} is longer than ${MAX_KEY_BYTES} bytes`);
  }
}

function checkSegment(segment: string, what: string): void {
  if (segment === '') throw new InvalidKeyError(`${what} must not have an empty segment (leading, trailing or double '/')`);
  if (segment === '.' || segment === '..') throw new InvalidKeyError(`${what} must not have a '.' or '..' segment`);
}

/** Throws `InvalidKeyError` unless `key` is a valid object key; returns it unchanged otherwise. */
export function validateKey(key: unknown): string {
  if (typeof key !== 'string') throw new InvalidKeyError('key must be a string');
  if (key.length === 0) throw new InvalidKeyError('key must not be empty');
  checkCharacters(key, 'key');
  for (const segment of key.split('/')) checkSegment(segment, 'key');
  return key;
}

/**
 * A list prefix is the start of a key: it may be empty or end with '/' or in the middle of a segment, but its
 * complete segments follow the key rules.
 */
export function validatePrefix(prefix: string | undefined): string {
  if (prefix === undefined || prefix === '') return '';
  checkCharacters(prefix, 'prefix');
  const segments = prefix.split('/');
  const last = segments.pop() ?? '';
  for (const segment of segments) checkSegment(segment, 'prefix');
  if (last === '.' || last === '..') throw new InvalidKeyError("prefix must not have a '.' or '..' segment");
  return prefix;
}

/** UTF-8 byte order, the order S3 lists keys in (differs from UTF-16 order for astral characters). */
export function compareKeys(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}
