/**
 * Object paths: `/v1/stores/:store/objects/<key>[/versions[/:id/restore] | /diff | /url]`. Keys contain '/', so
 * the path after `objects/` is split on its raw (still percent-encoded) slashes: a trailing `versions`, `diff` or
 * `url` segment names a sub-resource, and a key that itself ends in such a segment is addressed with its last slash
 * encoded (`a%2Fversions`). Segments are percent-decoded only after the split, then the key is validated, so
 * `a/%2e%2e/b` is the key `a/../b` and is rejected.
 */
import type { Context } from 'hono';
import { InvalidKeyError } from '../providers/errors.js';
import { validateKey } from '../providers/keys.js';
import { ApiError } from './errors.js';
import { incomingOf } from './node-request.js';

export type ObjectTarget =
  | { kind: 'list' }
  | { kind: 'object'; key: string }
  | { kind: 'versions'; key: string }
  | { kind: 'restore'; key: string; versionId: string }
  | { kind: 'diff'; key: string }
  | { kind: 'url'; key: string };

function decodeSegment(raw: string): string {
  if (!raw.includes('%')) return raw;
  try {
    return decodeURIComponent(raw);
  } catch (cause) {
    throw new InvalidKeyError('key is not valid percent-encoded UTF-8', { cause });
  }
}

function keyOf(rawSegments: string[]): string {
  return validateKey(rawSegments.map(decodeSegment).join('/'));
}

/** `rawPath` is everything after `/objects/`, exactly as it arrived (not decoded); none is the store's object list. */
export function parseObjectPath(rawPath: string): ObjectTarget {
  if (rawPath === '') return { kind: 'list' };
  const segments = rawPath.split('/');
  const last = segments[segments.length - 1];
  if (segments.length >= 2 && last === 'versions') return { kind: 'versions', key: keyOf(segments.slice(0, -1)) };
  if (segments.length >= 2 && last === 'diff') return { kind: 'diff', key: keyOf(segments.slice(0, -1)) };
  if (segments.length >= 2 && last === 'url') return { kind: 'url', key: keyOf(segments.slice(0, -1)) };
  if (segments.length >= 4 && last === 'restore' && segments[segments.length - 3] === 'versions') {
    return { kind: 'restore', key: keyOf(segments.slice(0, -3)), versionId: decodeSegment(segments[segments.length - 2]!) };
  }
  return { kind: 'object', key: keyOf(segments) };
}

/**
 * `X-Copy-Source: <store>/<key>`, the store and key written as in an object's path (a leading `/` allowed): raw
 * slashes separate segments, each percent-decoded after the split, so a key of any characters can be named.
 */
export function parseCopySource(value: string): { store: string; key: string } {
  const path = value.trim().replace(/^\//, '');
  const slash = path.indexOf('/');
  if (slash <= 0) throw new ApiError('BAD_REQUEST', 'X-Copy-Source must be <store>/<key>, as in an object\'s path');
  return { store: decodeSegment(path.slice(0, slash)), key: keyOf(path.slice(slash + 1).split('/')) };
}

const SUB_RESOURCES = new Set(['versions', 'diff', 'url', 'restore']);

/** The inverse, for URLs the API hands out: a key ending in a sub-resource name gets its last slash encoded. */
export function encodeKeyPath(key: string): string {
  const segments = key.split('/').map(encodeURIComponent);
  if (segments.length >= 2 && SUB_RESOURCES.has(segments[segments.length - 1]!)) {
    const last = segments.pop()!;
    segments.push(`${segments.pop()!}%2F${last}`);
  }
  return segments.join('/');
}

/**
 * The request path exactly as the client sent it. WHATWG URL parsing (which builds `c.req.url`) resolves `..` and
 * `%2e%2e` segments, so `a/%2e%2e/b` would silently become `b`; under Node the raw request line is still at hand.
 */
export function rawPathname(c: Context): string {
  const incoming = incomingOf(c)?.url;
  const raw = incoming === undefined ? new URL(c.req.url).pathname : originForm(incoming);
  const query = raw.indexOf('?');
  return query < 0 ? raw : raw.slice(0, query);
}

/**
 * A query string whose percent-encoding does not decode (`%FF`, `%E0%A4`, a lone `%`) is refused: Hono hands such a
 * parameter over as its raw text, which a delete by `?prefix=` would then act on as a literal prefix.
 */
export function queryEncodingError(c: Context): ApiError | undefined {
  const target = incomingOf(c)?.url ?? c.req.url;
  const start = target.indexOf('?');
  if (start < 0 || !target.includes('%', start)) return undefined;
  for (const part of target.slice(start + 1).split('&')) {
    try {
      decodeURIComponent(part);
    } catch {
      return new ApiError('BAD_REQUEST', `the query has a parameter that is not percent-encoded UTF-8: ${part.slice(0, 128)}`);
    }
  }
  return undefined;
}

/**
 * The path of a request target. HTTP/1.1 servers take the absolute form too (`PUT http://host/v1/...`, as sent to a
 * proxy), which routing reads as its path: keys are taken by position, so it must be read the same way here.
 */
function originForm(target: string): string {
  if (target.startsWith('/')) return target;
  const scheme = target.indexOf('://');
  if (scheme < 0) return target;
  const path = target.indexOf('/', scheme + 3);
  return path < 0 ? '/' : target.slice(path);
}

/** A raw path with a `.` or `..` segment, also percent-encoded (`%2e%2e`), which URL parsing would resolve away. */
export function hasDotSegment(rawPath: string): boolean {
  if (!rawPath.includes('.') && !/%2e/i.test(rawPath)) return false;
  return rawPath.split('/').some((segment) => {
    const plain = segment.replace(/%2e/gi, '.');
    return plain === '.' || plain === '..';
  });
}

/**
 * Characters a WHATWG URL parser reads differently from the raw path: a literal `\` becomes `/` and a literal `#`
 * starts a fragment, so routing (on the parsed URL) and the key (from the raw path) would see different segments.
 * Neither may appear in a request target; clients send them percent-encoded.
 */
export function ambiguousCharacter(rawPath: string): string | undefined {
  return /[\\#]/.exec(rawPath)?.[0];
}

/**
 * Why a raw path would be read differently by routing and by key parsing, or `undefined`. URL parsing resolves dot
 * segments away (`a/%2e%2e/b` would reach the route as `b`), reads `\\` as `/` and cuts at `#`.
 */
export function pathAmbiguity(rawPath: string): ApiError | undefined {
  if (hasDotSegment(rawPath)) return new ApiError('INVALID_KEY', "the path has a '.' or '..' segment (also percent-encoded)");
  const ambiguous = ambiguousCharacter(rawPath);
  return ambiguous === undefined ? undefined : new ApiError('INVALID_KEY', `the path has a literal '${ambiguous}'; send it percent-encoded`);
}

/** The raw path's segments from `index` on (`/v1/stores/<store>/objects/<key path>`: the key path is from 5). */
export function rawSegmentsFrom(rawPath: string, index: number): string {
  let at = 0;
  for (let segment = 0; segment < index; segment++) {
    at = rawPath.indexOf('/', at) + 1;
    if (at === 0) return '';
  }
  return rawPath.slice(at);
}
