/**
 * The `ifMatch` precondition of writes (RFC 9110 §13.1.1 If-Match, with strong comparison): the current object's
 * etag must be one of the given ones, or, with `'*'`, any object must exist. A missing object never matches. One
 * rule for every provider, each of which checks it where its write is atomic.
 */
import { PreconditionFailedError } from './errors.js';
import type { WriteOptions } from './types.js';

export type IfMatch = NonNullable<WriteOptions['ifMatch']>;

/** Matches any existing object. */
const ANY_ETAG = '*';

function ifMatchHolds(ifMatch: IfMatch, currentEtag: string | undefined): boolean {
  if (currentEtag === undefined) return false;
  const wanted = typeof ifMatch === 'string' ? [ifMatch] : ifMatch;
  return wanted.some((etag) => etag === ANY_ETAG || etag === currentEtag);
}

/** Throws `PreconditionFailedError` unless the object `key`, whose etag is `currentEtag` (if any), matches. */
export function requireIfMatch(key: string, ifMatch: IfMatch | undefined, currentEtag: string | undefined): void {
  if (ifMatch === undefined || ifMatchHolds(ifMatch, currentEtag)) return;
  const wanted = typeof ifMatch === 'string' ? ifMatch : ifMatch.join(', ');
  throw new PreconditionFailedError(
    currentEtag === undefined ? `no object "${key}" to match ${wanted}` : `"${key}" has etag ${currentEtag}, not ${wanted}`,
  );
}
