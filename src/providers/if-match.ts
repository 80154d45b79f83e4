/**
 * The preconditions of writes, one rule for every provider, each of which checks them where its write is atomic:
 *
 * - `ifMatch` (RFC 9110 §13.1.1 If-Match, with strong comparison): the current object's etag must be one of the
 *   given ones, or, with `'*'`, any object must exist. A missing object never matches.
 * - `ifNoneMatch: '*'` (§13.1.2 If-None-Match on a PUT, S3's conditional write): no current object may exist, so
 *   the write only creates. A deleted object is a missing one.
 *
 * Given together, both must hold (If-Match is evaluated first, as §13.2.2 orders them): with `'*'` they exclude
 * each other, so such a write always fails.
 */
import { PreconditionFailedError } from './errors.js';
import type { WriteOptions } from './types.js';

export type IfMatch = NonNullable<WriteOptions['ifMatch']>;
export type IfNoneMatch = NonNullable<WriteOptions['ifNoneMatch']>;

/** The precondition part of a write's options. */
export type Preconditions = Pick<WriteOptions, 'ifMatch' | 'ifNoneMatch'>;

/** Matches any existing object. */
const ANY_ETAG = '*';

function ifMatchHolds(ifMatch: IfMatch, currentEtag: string | undefined): boolean {
  if (currentEtag === undefined) return false;
  const wanted = typeof ifMatch === 'string' ? [ifMatch] : ifMatch;
  return wanted.some((etag) => etag === ANY_ETAG || etag === currentEtag);
}

/** Whether the write is conditional at all: a provider need not look at the current object otherwise. */
export function hasPreconditions(opts: Preconditions | undefined): boolean {
  return opts?.ifMatch !== undefined || opts?.ifNoneMatch !== undefined;
}

/** Throws `PreconditionFailedError` unless the object `key`, whose etag is `currentEtag` (if any), matches. */
export function requireIfMatch(key: string, ifMatch: IfMatch | undefined, currentEtag: string | undefined): void {
  if (ifMatch === undefined || ifMatchHolds(ifMatch, currentEtag)) return;
  const wanted = typeof ifMatch === 'string' ? ifMatch : ifMatch.join(', ');
  throw new PreconditionFailedError(
    currentEtag === undefined ? `no object "${key}" to match ${wanted}` : `"${key}" has etag ${currentEtag}, not ${wanted}`,
  );
}

/** Throws `PreconditionFailedError` when `ifNoneMatch` is given and an object `key` exists. */
export function requireIfNoneMatch(key: string, ifNoneMatch: IfNoneMatch | undefined, exists: boolean): void {
  if (ifNoneMatch === undefined || !exists) return;
  throw new PreconditionFailedError(`"${key}" already exists (the write was create-only)`);
}

/**
 * Both preconditions of `opts` against the object `key`, whose etag is `currentEtag` (undefined: there is none).
 * A provider calls it once, in the step that makes its write visible.
 */
export function requirePreconditions(key: string, opts: Preconditions | undefined, currentEtag: string | undefined): void {
  requireIfMatch(key, opts?.ifMatch, currentEtag);
  requireIfNoneMatch(key, opts?.ifNoneMatch, currentEtag !== undefined);
}
