/**
 * How an s3 object's metadata travels in `x-amz-meta-*` headers: the user's entries, percent-encoded only where HTTP
 * headers cannot carry them (non-ASCII, `%`, edge spaces), so ASCII metadata reads the same to any S3 client, and
 * the store's own `kyozo-*` entries (sha256, time, version id, message, author), which user names may not take.
 */
import { InvalidArgumentError } from './errors.js';
import { MAX_METADATA_BYTES, describeWrite, metadataBytes } from './metadata.js';
import type { Author, RestoreOptions, WriteOptions } from './types.js';

/** Our own entries in `x-amz-meta-*`; user metadata names with this prefix are refused. */
export const META = {
  sha256: 'kyozo-sha256',
  updated: 'kyozo-updated',
  version: 'kyozo-version',
  message: 'kyozo-message',
  author: 'kyozo-author',
} as const;
const RESERVED_META = 'kyozo-';
/** Stands in for a sha256 not known yet: our entries are measured before the body is hashed. */
export const SHA256_SHAPE = '0'.repeat(64);

function encodeMetaValue(value: string): string {
  try {
    return value.replace(/[^\x20-\x7e]|%|^ | $/gu, (c) => encodeURIComponent(c));
  } catch (error) {
    throw new InvalidArgumentError('metadata values must be valid Unicode', { cause: error });
  }
}

export function decodeMetaValue(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value; // written by another tool with a bare '%'
  }
}

export function userMetadata(raw: Record<string, string> | undefined): Record<string, string> {
  const metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(raw ?? {})) {
    if (!name.startsWith(RESERVED_META)) metadata[name.toLowerCase()] = decodeMetaValue(value);
  }
  return metadata;
}

/** User entries of stored metadata as they are (still encoded): for copies that keep them. */
export function storedUserMetadata(raw: Record<string, string> | undefined): Record<string, string> {
  const metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(raw ?? {})) if (!name.startsWith(RESERVED_META)) metadata[name] = value;
  return metadata;
}

function encodeUserMetadata(metadata: Record<string, string>): Record<string, string> {
  const encoded: Record<string, string> = {};
  for (const [name, value] of Object.entries(metadata)) {
    if (name.startsWith(RESERVED_META)) throw new InvalidArgumentError(`metadata names starting with "${RESERVED_META}" are reserved on s3 stores`);
    encoded[name] = encodeMetaValue(value);
  }
  return encoded;
}

/** What a write sends besides its body, refused up front where S3's headers cannot carry it. */
export function describeS3Write(opts: WriteOptions | undefined): { contentType: string; metadata: Record<string, string>; encoded: Record<string, string> } {
  const { contentType, metadata } = describeWrite(opts);
  // Content-Type travels as a header as it is: Node refuses characters past latin1 mid-request, S3 signs ASCII.
  if (!/^[\x20-\x7e]*$/.test(contentType)) throw new InvalidArgumentError('contentType must be printable ASCII on s3 stores');
  return { contentType, metadata, encoded: encodeUserMetadata(metadata) };
}

/**
 * AWS S3 refuses more than 2 KB of `x-amz-meta-*` (UTF-8 bytes of names and values), our kyozo-* entries included:
 * user metadata within the contract's limit can exceed it once ours are added and non-ASCII is percent-encoded.
 */
export function requireMetadataFits(metadata: Record<string, string>): void {
  const bytes = metadataBytes(metadata);
  if (bytes > MAX_METADATA_BYTES) {
    throw new InvalidArgumentError(
      `metadata takes ${bytes} bytes as S3 headers (percent-encoded, with the store's own entries and any version message), over S3's limit of ${MAX_METADATA_BYTES}`,
    );
  }
}

export function versionMetadata(message: string | undefined, author: Author | undefined): Record<string, string> {
  const entries: Record<string, string> = {};
  if (message !== undefined) entries[META.message] = encodeMetaValue(message);
  if (author !== undefined) entries[META.author] = encodeMetaValue(JSON.stringify({ name: author.name, email: author.email }));
  return entries;
}

/**
 * The metadata of a restore's version: `base` (the restored version's own and ours) with the caller's message, else
 * `restore <id>` where S3's 2 KB leave room for it (the restored version may take nearly all of them), else none. Too
 * much is refused only when it is what the caller gave.
 */
export function restoreMetadata(base: Record<string, string>, versionId: string, opts: RestoreOptions | undefined): { metadata: Record<string, string>; message?: string } {
  const described = (message: string | undefined) => ({ ...base, ...versionMetadata(message, opts?.author) });
  let message: string | undefined = opts?.message ?? `restore ${versionId}`;
  if (opts?.message === undefined && metadataBytes(described(message)) > MAX_METADATA_BYTES) message = undefined;
  const metadata = described(message);
  requireMetadataFits(metadata);
  return { metadata, message };
}

export function parseAuthor(raw: string | undefined): Author | undefined {
  if (raw === undefined) return undefined;
  try {
    const parsed = JSON.parse(decodeMetaValue(raw)) as { name?: unknown; email?: unknown };
    if (typeof parsed.name !== 'string') return undefined;
    return typeof parsed.email === 'string' ? { name: parsed.name, email: parsed.email } : { name: parsed.name };
  } catch {
    return undefined;
  }
}

/** The entries of a request's metadata that are ours (`kyozo-*`): what tells its version from any other. */
export function stampOf(metadata: Record<string, string>): Record<string, string> {
  const stamp: Record<string, string> = {};
  for (const [name, value] of Object.entries(metadata)) if (name.startsWith(RESERVED_META)) stamp[name] = value;
  return stamp;
}
