/**
 * How an object's description travels in HTTP headers, both ways: ETag, Last-Modified, X-Kyozo-Version and one
 * `X-Meta-<name>` header per metadata entry. Header values are bytes (Latin-1), so a value outside printable ASCII
 * travels as `utf-8''<percent-encoded>` (the RFC 8187 form) and is decoded on the way in.
 */
import type { ObjectInfo } from '../providers/types.js';
import { ApiError } from './errors.js';

const META_PREFIX = 'x-meta-';
const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;
const EXTENDED = "utf-8''";

export function quoteEtag(etag: string): string {
  return `"${etag}"`;
}

function encodeHeaderValue(value: string): string {
  return PRINTABLE_ASCII.test(value) && !value.toLowerCase().startsWith(EXTENDED) ? value : `${EXTENDED}${encodeURIComponent(value)}`;
}

function decodeHeaderValue(name: string, value: string): string {
  if (!value.toLowerCase().startsWith(EXTENDED)) return value;
  try {
    return decodeURIComponent(value.slice(EXTENDED.length));
  } catch {
    throw new ApiError('BAD_REQUEST', `header ${name} is not valid utf-8'' percent-encoding`);
  }
}

export function objectHeaders(info: ObjectInfo): Record<string, string> {
  const headers: Record<string, string> = {
    ETag: quoteEtag(info.etag),
    'Content-Type': info.contentType,
    'Last-Modified': new Date(info.updatedAt).toUTCString(),
    'Accept-Ranges': 'bytes',
  };
  if (info.versionId !== undefined) headers['X-Kyozo-Version'] = info.versionId;
  for (const [name, value] of Object.entries(info.metadata)) headers[`X-Meta-${name}`] = encodeHeaderValue(value);
  return headers;
}

/** Metadata from a request's `X-Meta-*` headers. */
export function metadataFromHeaders(headers: Iterable<[string, string]>): Record<string, string> {
  const metadata: Record<string, string> = {};
  for (const [name, value] of headers) {
    if (name.startsWith(META_PREFIX) && name.length > META_PREFIX.length) {
      metadata[name.slice(META_PREFIX.length)] = decodeHeaderValue(name, value);
    }
  }
  return metadata;
}

/**
 * `If-Match` as a write's `ifMatch`: `*`, one etag or a list of them, without their quotes. A weak tag (`W/"…"`)
 * is kept as sent and so never matches: If-Match compares strongly (RFC 9110 §13.1.1).
 */
export function parseIfMatch(header: string | undefined): string | string[] | undefined {
  if (header === undefined) return undefined;
  const tags = header
    .split(',')
    .map((tag) => tag.trim())
    .filter((tag) => tag !== '')
    .map((tag) => (tag.length >= 2 && tag.startsWith('"') && tag.endsWith('"') ? tag.slice(1, -1) : tag));
  if (tags.length === 0) throw new ApiError('BAD_REQUEST', 'If-Match names no etag');
  return tags.length === 1 ? tags[0] : tags;
}

/** `If-None-Match` holds this etag (or `*`). */
export function etagMatches(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  return header.split(',').some((candidate) => {
    const trimmed = candidate.trim().replace(/^W\//, '');
    return trimmed === '*' || trimmed === quoteEtag(etag);
  });
}

/**
 * Whether a Range may be honoured under `If-Range` (RFC 9110 §13.1.5): with no If-Range, or one naming the current
 * etag (strongly). A weak tag, another etag or a date means "the whole object": a client resuming a download of
 * something that changed gets it all, never a mix of two versions.
 */
export function ifRangeHolds(header: string | undefined, etag: string): boolean {
  return header === undefined || header.trim() === quoteEtag(etag);
}

/**
 * One `bytes=` range of an object of `size` bytes as an inclusive pair, or `undefined` for no Range header.
 * Several ranges, or a range that cannot be satisfied, are refused with 416 (the client learns the size from
 * `Content-Range: bytes *\/size`) rather than silently answered in full.
 */
export function parseRange(header: string | undefined, size: number): [number, number] | undefined {
  if (header === undefined) return undefined;
  const unsatisfiable = (why: string) => new ApiError('RANGE_NOT_SATISFIABLE', why, { 'Content-Range': `bytes */${size}` });
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match || (match[1] === '' && match[2] === '')) throw unsatisfiable(`Range "${header.slice(0, 100)}" is not one bytes=start-end range`);
  const [, first, last] = match;
  if (first === '') {
    const suffix = Number(last);
    if (suffix === 0 || size === 0) throw unsatisfiable('empty suffix range');
    return [Math.max(0, size - suffix), size - 1];
  }
  const start = Number(first);
  const end = last === '' ? size - 1 : Math.min(Number(last), size - 1);
  if (start >= size || end < start) throw unsatisfiable(`range ${start}-${last} is outside an object of ${size} bytes`);
  return [start, end];
}
