/**
 * Integrity digests of RFC 9530, with sha-256 (the content's hash every store keeps as its etag).
 *
 * An upload may name the sha-256 of its body in `Content-Digest` or `Repr-Digest` (the same bytes here: a write in a
 * content coding is refused, and the body is stored as sent). It is checked against the bytes that arrived, once
 * they are staged and before anything is enqueued: a body changed on the way (a proxy, a truncating client library)
 * is answered 400 `BAD_DIGEST` and nothing is written. A digest may also come as a trailer, after a chunked body: it
 * is checked the same way once the body has arrived, and one announced in `Trailer` that never comes is refused. A
 * copy (`X-Copy-Source`) is checked against the source's etag, which the copy job holds it to. An object served names
 * its own in `Repr-Digest`, so a client can check what it downloaded, a range included (the digest is the whole
 * object's).
 */
import { ApiError } from './errors.js';

/** A Structured Fields dictionary member `<algorithm>=:<base64>:`, parameters allowed after it (and ignored). */
const MEMBER = /^([a-z*][a-z0-9_.*-]*)=:([A-Za-z0-9+/]*={0,2}):(?:;.*)?$/;
const DIGEST_HEADERS = ['Content-Digest', 'Repr-Digest'] as const;

/** A dictionary's members: split on the commas outside quoted strings (RFC 8941 §3.3.3, `\` escaping in them). */
function dictionaryMembers(field: string): string[] {
  const members: string[] = [];
  let start = 0;
  let quoted = false;
  for (let i = 0; i < field.length; i++) {
    const char = field[i];
    if (quoted && char === '\\') i++;
    else if (char === '"') quoted = !quoted;
    else if (char === ',' && !quoted) {
      members.push(field.slice(start, i));
      start = i + 1;
    }
  }
  members.push(field.slice(start));
  return members;
}

/**
 * The sha-256 a digest field names (hex), `undefined` when it is absent or empty (RFC 8941: an empty dictionary is
 * no field); 400 when it is malformed or lacks sha-256.
 */
function sha256Named(name: string, header: string | undefined): string | undefined {
  if (header === undefined || header.trim() === '') return undefined;
  let named: string | undefined;
  for (const member of dictionaryMembers(header)) {
    const match = MEMBER.exec(member.trim());
    if (match === null) throw new ApiError('BAD_REQUEST', `${name} is not a list of <algorithm>=:<base64>: (RFC 9530): ${JSON.stringify(member.trim().slice(0, 80))}`);
    if (match[1] !== 'sha-256') continue;
    const digest = Buffer.from(match[2]!, 'base64');
    if (digest.length !== 32) throw new ApiError('BAD_REQUEST', `${name}: a sha-256 digest is 32 bytes, base64-encoded; this one is ${digest.length}`);
    named = digest.toString('hex');
  }
  // A digest the API cannot check would pass unchecked: the client asked for a check, so it learns there is none.
  if (named === undefined) throw new ApiError('BAD_REQUEST', `${name}: only sha-256 is checked here (sha-256=:<base64>:)`);
  return named;
}

/** The sha-256 digests (hex) an upload names, read before its body is: a malformed header is refused at once. */
export function requestedDigests(header: (name: string) => string | undefined): string[] {
  return DIGEST_HEADERS.flatMap((name) => sha256Named(name, header(name.toLowerCase())) ?? []);
}

/**
 * The sha-256 digests (hex) an upload's trailers name, read once its body has arrived whole. `announced`: its
 * `Trailer` header. A digest field announced there that did not come is refused: the client asked for a check.
 */
export function trailerDigests(announced: string | undefined, trailer: (name: string) => string | undefined): string[] {
  const names = announced?.toLowerCase().split(',').map((name) => name.trim()) ?? [];
  return DIGEST_HEADERS.flatMap((name) => {
    const digest = sha256Named(name, trailer(name.toLowerCase()));
    if (digest === undefined && names.includes(name.toLowerCase())) {
      throw new ApiError('BAD_REQUEST', `${name} is announced in Trailer but did not come: send the digest as a header`);
    }
    return digest ?? [];
  });
}

/**
 * Throws `BAD_DIGEST` unless the content (its sha-256, `etag`) is the one every digest names. `content`: what it is
 * to the client ("the body received", "the copy source").
 */
export function checkDigests(digests: readonly string[], etag: string, content: string): void {
  if (digests.every((digest) => digest === etag)) return;
  const sent = Buffer.from(etag, 'hex').toString('base64');
  throw new ApiError('BAD_DIGEST', `${content} does not match its digest: its sha-256 is :${sent}: (nothing was stored)`);
}

/** `Repr-Digest` of an object, from its etag (every store's etag is the content's sha-256, hex). */
export function reprDigest(etag: string): string {
  return `sha-256=:${Buffer.from(etag, 'hex').toString('base64')}:`;
}
