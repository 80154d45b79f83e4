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

/** Text that UTF-8 can carry as it is: no lone surrogate. */
export function isWellFormed(value: string): boolean {
  return !LONE_SURROGATE.test(value);
}

// Any character the checks below look at: most keys have none, and one scan clears them.
const SUSPECT = /[\u0000-\u001f\u007f-\u009f\\\ud800-\udfff]/;
// A UTF-16 code unit is at most 3 bytes of UTF-8: a string this short cannot be over the limit.
const SURELY_SHORT = Math.floor(MAX_KEY_BYTES / 3);

function checkCharacters(value: string, what: string): void {
  if (SUSPECT.test(value)) {
    if (value.includes('\\')) throw new InvalidKeyError(`${what} must not contain a backslash`);
    if (CONTROL_CHARACTER.test(value)) throw new InvalidKeyError(`${what} must not contain control characters`);
    if (!isWellFormed(value)) throw new InvalidKeyError(`${what} is not valid Unicode`);
  }
  if (value.length > SURELY_SHORT && Buffer.byteLength(value, 'utf8') > MAX_KEY_BYTES) {
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

// Noncharacters that XML 1.0 cannot carry: S3 names keys in XML (DeleteObjects), so on s3 such a key could be written
// but never deleted with its versions.
const NOT_IN_XML = /[\ufffe\uffff]/;

/**
 * `validateKey`, and for a key a job is about to create (a write, a version, a copy's target) no U+FFFE or U+FFFF
 * either. Only new keys are refused them: one stored before (on a store that could take it) stays readable and
 * deletable.
 */
export function validateNewKey(key: unknown): string {
  validateKey(key);
  if (NOT_IN_XML.test(key as string)) throw new InvalidKeyError("key must not contain U+FFFE or U+FFFF (noncharacters S3's XML cannot carry)");
  return key as string;
}

/**
 * A list prefix is the start of a key: it may be empty or end with '/' or in the middle of a segment, but its
 * complete segments follow the key rules. What follows the last '/' is the start of a segment, not one: `.` and
 * `..` there begin keys such as `.env` and `..hidden`.
 */
export function validatePrefix(prefix: string | undefined): string {
  if (prefix === undefined || prefix === '') return '';
  checkCharacters(prefix, 'prefix');
  for (const segment of prefix.split('/').slice(0, -1)) checkSegment(segment, 'prefix');
  return prefix;
}

/**
 * A UTF-16 code unit's place in code point order: units order as their code points do, except that surrogates
 * (halves of astral characters, U+10000 and up) must sort above U+E000..U+FFFF.
 */
function codePointRank(unit: number): number {
  if (unit < 0xd800) return unit;
  return unit < 0xe000 ? unit + 0x2000 : unit - 0x800;
}

/**
 * UTF-8 byte order, the order S3 lists keys in (differs from UTF-16 order for astral characters). UTF-8 byte
 * order is code point order, so this compares code units without encoding either string.
 */
export function compareKeys(a: string, b: string): number {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codePointRank(x) - codePointRank(y);
  }
  return a.length - b.length;
}
