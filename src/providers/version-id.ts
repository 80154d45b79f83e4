/**
 * Version ids for providers that mint their own (disk, ram, s3 without native versioning): 26 characters whose
 * string order is creation order, so "newest first" is a reverse sort by name, with no clock lookups at read time.
 * Layout: 11 base32 characters of milliseconds, 5 of a per-process sequence (ids minted in one millisecond stay
 * ordered), 10 random ones (ids minted by two processes never collide).
 */
import { randomBytes } from 'node:crypto';

export const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz'; // Crockford base32, lower case: sortable and path-safe

let lastMillis = 0;
let sequence = 0;

function base32(value: number, width: number): string {
  let out = '';
  for (let i = 0; i < width; i++) {
    out = ALPHABET[value % 32]! + out;
    value = Math.floor(value / 32);
  }
  return out;
}

/** The per-millisecond sequence's 5 characters of base32. */
const MAX_SEQUENCE = 32 ** 5 - 1;

export function newVersionId(now = Date.now()): string {
  if (now <= lastMillis) {
    now = lastMillis;
    sequence++;
    if (sequence > MAX_SEQUENCE) {
      // Out of sequence numbers in this millisecond: the next one, so ids keep sorting after those already made.
      now = ++lastMillis;
      sequence = 0;
    }
  } else {
    lastMillis = now;
    sequence = 0;
  }
  const random = randomBytes(10);
  let tail = '';
  for (const byte of random) tail += ALPHABET[byte % 32];
  return base32(now, 11) + base32(sequence, 5) + tail;
}

function fromBase32(text: string): number {
  let value = 0;
  for (const character of text) value = value * 32 + ALPHABET.indexOf(character);
  return value;
}

/**
 * Ids minted here from now on sort after `versionId` (one read from a snapshot or another process, minted by a clock
 * ahead of this one): a version made after it must not list as older.
 */
export function mintAfter(versionId: string): void {
  if (!isVersionId(versionId)) return;
  const millis = fromBase32(versionId.slice(0, 11));
  // A time past what a number holds exactly (`zzzzzzzzzzz…`, from a damaged or crafted file) would wrap the ids
  // minted after it to sort first: such an id is not followed.
  if (!Number.isSafeInteger(millis + 1)) return;
  const seen = fromBase32(versionId.slice(11, 16));
  if (millis > lastMillis || (millis === lastMillis && seen > sequence)) {
    lastMillis = millis;
    sequence = seen;
  }
}

export function isVersionId(value: string): boolean {
  return /^[0-9a-hjkmnp-tv-z]{26}$/.test(value);
}
