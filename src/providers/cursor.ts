/**
 * Opaque page cursors. A cursor names the last item of the page it ends, so a page stays correct when items
 * are added or removed between calls (no offset drift).
 *
 * A cursor is checked, not trusted: base64url of `<kind><check><position>`, where kind is the listing that issued
 * it (`l` objects, `v` one key's versions) and check is a digest of kind, key and position. A cursor edited, cut
 * short, or issued by another listing fails the check and is refused rather than read as some other position.
 * The check catches mistakes, not forgers: a forged cursor can only name a place to continue from, which reveals
 * nothing a listing does not.
 */
import { createHash } from 'node:crypto';
import { InvalidArgumentError } from './errors.js';
import { MAX_KEY_BYTES } from './keys.js';
import { DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT } from './types.js';
import { decodeUtf8Strict } from '../text.js';

type Kind = 'l' | 'v' | 'p';
const LISTING: Record<Kind, string> = { l: 'an object listing', v: 'a version listing', p: 'a listing by delimiter' };
const CHECK_BYTES = 6;
// A position is a key, a version id or a common prefix, none longer than a key, or the position the store lists from
// past every key under a common prefix (`list-delimited.ts`: a key's bytes and one 4-byte character): bounds the
// work a forged cursor can cause.
const MAX_POSITION_BYTES = MAX_KEY_BYTES + 4;
const MAX_CURSOR_LENGTH = Math.ceil(((1 + CHECK_BYTES + MAX_POSITION_BYTES) * 4) / 3);

/** An object-list cursor that continues after `key`. */
export function encodeCursor(key: string): string {
  return seal('l', '', key);
}

/** The key an object-list cursor continues after; undefined for no cursor (the first page). */
export function decodeCursor(cursor: string | undefined): string | undefined {
  return unseal(cursor, 'l', '', 'cursor is not one this store issued (edited or cut short)');
}

/** A listing-by-delimiter cursor that continues past every key under the common prefix `prefix`. */
export function encodePastPrefixCursor(prefix: string): string {
  return seal('p', '', prefix);
}

/** The common prefix a listing-by-delimiter cursor continues past; undefined for any other cursor (or none). */
export function decodePastPrefixCursor(cursor: string | undefined): string | undefined {
  if (cursor === undefined || Buffer.from(cursor.slice(0, 2), 'base64url')[0] !== 'p'.charCodeAt(0)) return undefined;
  return unseal(cursor, 'p', '', 'cursor is not one this store issued (edited or cut short)');
}

/** A cursor of `key`'s versions that continues after `versionId`. */
export function encodeVersionsCursor(key: string, versionId: string): string {
  return seal('v', key, versionId);
}

/** The version id a cursor of `key`'s versions continues after; undefined for no cursor (the first page). */
export function decodeVersionsCursor(key: string, cursor: string | undefined): string | undefined {
  return unseal(cursor, 'v', key, `cursor is not one this store issued for the versions of "${key}" (edited, cut short, or another key's)`);
}

// Keys and version ids hold no NUL, so the parts cannot run into each other.
function check(kind: Kind, key: string, position: Buffer): Buffer {
  return createHash('sha256').update(`${kind}\0${key}\0`).update(position).digest().subarray(0, CHECK_BYTES);
}

function seal(kind: Kind, key: string, position: string): string {
  const bytes = Buffer.from(position, 'utf8');
  return Buffer.concat([Buffer.from(kind, 'latin1'), check(kind, key, bytes), bytes]).toString('base64url');
}

function unseal(cursor: string | undefined, kind: Kind, key: string, notIssued: string): string | undefined {
  if (cursor === undefined || cursor === '') return undefined;
  if (cursor.length > MAX_CURSOR_LENGTH) throw new InvalidArgumentError('cursor is longer than any this store issues');
  const bytes = Buffer.from(cursor, 'base64url');
  // Buffer skips characters outside the alphabet and stray bits: only a cursor that encodes back to itself is ours.
  if (bytes.length <= 1 + CHECK_BYTES || bytes.toString('base64url') !== cursor) throw new InvalidArgumentError(notIssued);
  const issuer = String.fromCharCode(bytes[0]!);
  if (issuer !== kind && Object.hasOwn(LISTING, issuer)) {
    throw new InvalidArgumentError(`cursor continues ${LISTING[issuer as Kind]}, not ${LISTING[kind]}`);
  }
  const position = bytes.subarray(1 + CHECK_BYTES);
  if (issuer !== kind || !bytes.subarray(1, 1 + CHECK_BYTES).equals(check(kind, key, position))) throw new InvalidArgumentError(notIssued);
  try {
    return decodeUtf8Strict(position);
  } catch (error) {
    throw new InvalidArgumentError(notIssued, { cause: error });
  }
}

export function pageLimit(limit: number | undefined): number {
  if (limit === undefined) return DEFAULT_LIST_LIMIT;
  if (!Number.isInteger(limit) || limit < 1) throw new InvalidArgumentError('limit must be a positive integer');
  return Math.min(limit, MAX_LIST_LIMIT);
}
