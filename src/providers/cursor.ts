/**
 * Opaque list cursors. A cursor names the last item of the page it ends, so a page stays correct when items
 * are added or removed between calls (no offset drift).
 */
import { InvalidArgumentError } from './errors.js';
import { DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT } from './types.js';

export function encodeCursor(position: string): string {
  return Buffer.from(position, 'utf8').toString('base64url');
}

export function decodeCursor(cursor: string | undefined): string | undefined {
  if (cursor === undefined || cursor === '') return undefined;
  if (!/^[A-Za-z0-9_-]+$/.test(cursor)) throw new InvalidArgumentError('cursor is not one this store issued');
  return Buffer.from(cursor, 'base64url').toString('utf8');
}

export function pageLimit(limit: number | undefined): number {
  if (limit === undefined) return DEFAULT_LIST_LIMIT;
  if (!Number.isInteger(limit) || limit < 1) throw new InvalidArgumentError('limit must be a positive integer');
  return Math.min(limit, MAX_LIST_LIMIT);
}
