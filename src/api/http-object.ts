/**
 * How an object's description travels in HTTP headers, both ways: ETag, Last-Modified, X-Kyozo-Version and one
 * `X-Meta-<name>` header per metadata entry. Header values are bytes (Latin-1), so a value outside printable ASCII
 * goes out as `utf-8''<percent-encoded>` (the RFC 8187 form); on the way in that form is decoded, and so is text
 * sent as raw UTF-8. Also how a read's conditional and Range headers are judged against the object.
 */
import { PreconditionFailedError } from '../providers/errors.js';
import { requireIfMatch } from '../providers/if-match.js';
import { DEFAULT_CONTENT_TYPE, type ObjectInfo } from '../providers/types.js';
import { reprDigest } from './content-digest.js';
import { ApiError } from './errors.js';
import { decodeUtf8Strict } from '../text.js';
import { parseHttpDate } from './http-date.js';

const META_PREFIX = 'x-meta-';
export const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;
const ASCII = /^[\x00-\x7f]*$/;
/**
 * What a Content-Type goes out as, and comes in as: tab and printable ASCII. Latin-1's upper half would be a valid
 * header byte, but Node sends it as one byte with some answers and as UTF-8 with others (HEAD and GET differed).
 */
export const HEADER_TEXT = /^[\t\x20-\x7e]*$/;
const EXTENDED = "utf-8''";
/**
 * With Last-Modified alone a cache may reuse a response unasked for a heuristic while (RFC 9111 §4.2.2), and a
 * shared cache may store a signed GET, which has no Authorization (§3.5). Objects change under the same URL and
 * signed URLs expire: only the client keeps a copy, and revalidates it before each use.
 */
const CACHE_CONTROL = 'private, no-cache';

export function quoteEtag(etag: string): string {
  return `"${etag}"`;
}

/** As it goes out: encoded when it is not printable ASCII, or has spaces at an end (HTTP would drop them). */
function encodeHeaderValue(value: string): string {
  const plain = PRINTABLE_ASCII.test(value) && value.trim() === value && !value.toLowerCase().startsWith(EXTENDED);
  return plain ? value : `${EXTENDED}${encodeURIComponent(value)}`;
}

/**
 * A request header's text: decoded from the `utf-8''<percent-encoded>` form (RFC 8187) when it has it, else read as
 * UTF-8. Node hands header bytes over one character per byte (Latin-1), while curl, Python requests or fetch send
 * text as raw UTF-8: read as Latin-1 it would be stored garbled (`Köln` as `KÃ¶ln`). Bytes that are not UTF-8 are
 * refused rather than guessed at.
 */
export function decodeHeaderValue(name: string, value: string): string {
  if (value.toLowerCase().startsWith(EXTENDED)) return decodeExtended(name, value.slice(EXTENDED.length));
  if (ASCII.test(value)) return value;
  try {
    return decodeUtf8Strict(Buffer.from(value, 'latin1'));
  } catch {
    throw new ApiError('BAD_REQUEST', `header ${name} is not valid UTF-8; send text outside ASCII as utf-8''<percent-encoded>`);
  }
}

/** The part after `utf-8''`: percent-encoded UTF-8, in ASCII as RFC 8187 writes it (raw bytes there are neither). */
function decodeExtended(name: string, encoded: string): string {
  if (ASCII.test(encoded)) {
    try {
      return decodeURIComponent(encoded);
    } catch {
      // Not UTF-8 once decoded: refused below.
    }
  }
  throw new ApiError('BAD_REQUEST', `header ${name} is not valid utf-8'' percent-encoding`);
}

export function objectHeaders(info: ObjectInfo): Record<string, string> {
  const headers: Record<string, string> = {
    ETag: quoteEtag(info.etag),
    'Repr-Digest': reprDigest(info.etag),
    // Refused on writes; one stored before (or by another program) is not sent as what a header cannot carry.
    'Content-Type': HEADER_TEXT.test(info.contentType) ? info.contentType : DEFAULT_CONTENT_TYPE,
    'Last-Modified': new Date(info.updatedAt).toUTCString(),
    'Accept-Ranges': 'bytes',
    'Cache-Control': CACHE_CONTROL,
    // Served on the API's (and the board's) origin with the Content-Type its writer chose: text/html or SVG must
    // not run as a page there (stored XSS). No sniffing, and a sandbox without scripts or the origin.
    'X-Content-Type-Options': 'nosniff',
    'Content-Security-Policy': 'sandbox',
  };
  if (info.versionId !== undefined) headers['X-Kyozo-Version'] = info.versionId;
  // Which tier of a hybrid store answered (`hot`, `cold`, or `backup` while cold is down).
  const tier = (info as { tier?: string }).tier;
  if (tier !== undefined) headers['X-Kyozo-Tier'] = tier;
  for (const [name, value] of Object.entries(info.metadata)) headers[`X-Meta-${name}`] = encodeHeaderValue(value);
  return headers;
}

/** Metadata from a request's `X-Meta-*` headers. */
export function metadataFromHeaders(headers: Iterable<[string, string]>): Record<string, string> {
  // No prototype: `X-Meta-__proto__` is then an entry, refused by the name rules, not a silent prototype change.
  const metadata: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const [name, value] of headers) {
    if (name.startsWith(META_PREFIX) && name.length > META_PREFIX.length) {
      metadata[name.slice(META_PREFIX.length)] = decodeHeaderValue(name, value);
    }
  }
  return metadata;
}

/**
 * One element of an If-Match list, and the comma after it: an entity tag of RFC 9110 §8.8.3 (`"…"`, which may hold
 * a comma; weak `W/"…"`), `*`, or an etag sent without its quotes (as copied from a JSON answer). What is left when
 * none fits (a stray quote, a space inside) is malformed: refused, rather than compared as sent.
 */
const LIST_ELEMENT = /[ \t]*((?:W\/)?"[\x21\x23-\x7e\x80-\xff]*"|[\x21\x23-\x2b\x2d-\x7e]+)?[ \t]*(?:,|$)/y;

/** The tags of an If-Match list as sent (empty elements dropped, as RFC 9110 §5.6.1 says to). */
function ifMatchTags(header: string): string[] {
  const tags: string[] = [];
  LIST_ELEMENT.lastIndex = 0;
  while (LIST_ELEMENT.lastIndex < header.length) {
    const at = LIST_ELEMENT.lastIndex;
    const element = LIST_ELEMENT.exec(header);
    if (element === null) {
      throw new ApiError('BAD_REQUEST', `If-Match: ${JSON.stringify(header.slice(at, at + 80))} is not an etag (quoted: "<etag>")`);
    }
    if (element[1] !== undefined) tags.push(element[1]);
  }
  return tags;
}

/**
 * `If-Match` as a write's `ifMatch`: `*`, one etag or a list of them, without their quotes. A weak tag (`W/"…"`)
 * is kept as sent and so never matches: If-Match compares strongly (RFC 9110 §13.1.1). So is a quoted `"*"`, an etag
 * like any other, not the `*` that matches every object.
 */
export function parseIfMatch(header: string | undefined): string | string[] | undefined {
  if (header === undefined) return undefined;
  const tags = ifMatchTags(header).map((tag) => (tag.startsWith('"') && tag !== '"*"' ? tag.slice(1, -1) : tag));
  if (tags.length === 0) throw new ApiError('BAD_REQUEST', 'If-Match names no etag');
  return tags.length === 1 ? tags[0] : tags;
}

/** `If-None-Match` holds this etag (or `*`). */
function etagMatches(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  return header.split(',').some((candidate) => {
    const trimmed = candidate.trim().replace(/^W\//, '');
    return trimmed === '*' || trimmed === quoteEtag(etag);
  });
}

/**
 * Whether the object changed after an HTTP-date, compared in whole seconds as Last-Modified states it; `undefined`
 * for no date or one that is not a date, which RFC 9110 §13.1.3-4 says to ignore.
 */
function modifiedSince(httpDate: string | undefined, info: ObjectInfo): boolean | undefined {
  const since = httpDate === undefined ? undefined : parseHttpDate(httpDate.trim());
  if (since === undefined) return undefined;
  return Math.floor(Date.parse(info.updatedAt) / 1000) > Math.floor(since / 1000);
}

/**
 * The preconditions of a GET or HEAD of the object `key`, in RFC 9110 §13.2.2's order. A false If-Match (strong,
 * as on writes) or, without If-Match, a false If-Unmodified-Since throws 412. Then `true` means "answer 304":
 * If-None-Match names the etag (weakly), or, without If-None-Match, If-Modified-Since finds it unchanged.
 */
export function notModified(header: (name: string) => string | undefined, key: string, info: ObjectInfo): boolean {
  const ifMatch = header('if-match');
  if (ifMatch !== undefined) requireIfMatch(key, parseIfMatch(ifMatch), info.etag);
  else if (modifiedSince(header('if-unmodified-since'), info) === true) throw new PreconditionFailedError(`"${key}" was modified after If-Unmodified-Since`);
  const ifNoneMatch = header('if-none-match');
  if (ifNoneMatch !== undefined) return etagMatches(ifNoneMatch, info.etag);
  return modifiedSince(header('if-modified-since'), info) === false;
}

/**
 * Whether a Range may be honoured under `If-Range` (RFC 9110 §13.1.5): with no If-Range, or one naming the current
 * etag (strongly). A weak tag, another etag or a date means "the whole object": a client resuming a download of
 * something that changed gets it all, never a mix of two versions.
 */
export function ifRangeHolds(header: string | undefined, etag: string): boolean {
  return header === undefined || header.trim() === quoteEtag(etag);
}

function rangeNotSatisfiable(why: string, size: number): ApiError {
  return new ApiError('RANGE_NOT_SATISFIABLE', why, { 'Content-Range': `bytes */${size}` });
}

/** One `first-last`, `first-` or `-suffix` as an inclusive pair within `size` bytes; `undefined` when outside. */
function satisfiableRange(spec: string, size: number): [number, number] | undefined {
  const match = /^(\d*)-(\d*)$/.exec(spec);
  if (!match || (match[1] === '' && match[2] === '')) throw rangeNotSatisfiable(`"${spec.slice(0, 100)}" is not a bytes range`, size);
  const [, first, last] = match;
  if (first === '') {
    const suffix = Number(last);
    return suffix === 0 || size === 0 ? undefined : [Math.max(0, size - suffix), size - 1];
  }
  const start = Number(first);
  if (last !== '' && Number(last) < start) throw rangeNotSatisfiable(`range ${first}-${last} ends before it starts`, size);
  return start < size ? [start, last === '' ? size - 1 : Math.min(Number(last), size - 1)] : undefined;
}

/**
 * The `bytes` Range of an object of `size` bytes to send as an inclusive pair, or `undefined` to send it whole: no
 * Range, a unit other than bytes (ignored, RFC 9110 §14.2; unit names are case-insensitive, §14.1), or several ranges
 * of which one is satisfiable (a server may ignore Range, §14.2, and the whole object is simpler for both sides than
 * a multipart/byteranges answer). A malformed range, or none satisfiable, is 416 with `Content-Range: bytes *\/size`
 * so that the client learns the size.
 */
export function parseRange(header: string | undefined, size: number): [number, number] | undefined {
  if (header === undefined) return undefined;
  const equals = header.indexOf('=');
  if (equals < 0 || header.slice(0, equals).toLowerCase() !== 'bytes') return undefined;
  const specs = header
    .slice(equals + 1)
    .split(',')
    .map((spec) => spec.trim())
    .filter((spec) => spec !== '');
  if (specs.length === 0) throw rangeNotSatisfiable('Range names no bytes range', size);
  // An empty object has no byte to send, yet a suffix range of it is satisfiable (RFC 9110 §14.1.1): sent whole.
  if (size === 0 && specs.some((spec) => /^-\d*[1-9]\d*$/.test(spec))) return undefined;
  const satisfiable = specs.map((spec) => satisfiableRange(spec, size)).filter((range) => range !== undefined);
  if (satisfiable.length === 0) throw rangeNotSatisfiable(`Range "${header.slice(0, 100)}" is outside an object of ${size} bytes`, size);
  return specs.length === 1 ? satisfiable[0] : undefined;
}
