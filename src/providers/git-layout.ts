/**
 * How a git store lays its keys out in a git tree, and what it records beside them.
 *
 * Content: key `docs/guide.md` is the file `docs/guide.md~`. Each segment is escaped (`%` -> `%25`, `~` -> `%7E`,
 * a leading `.` -> `%2E`, a leading space -> `%20`, HFS-ignorable code points -> their UTF-8 percent bytes) and the
 * last one gets a `~`. A git tree cannot hold a file and a directory of one name; with the `~` the file `a~` and
 * the directory `a` coexist, so keys `a` and `a/b` can too (as on S3). The leading-dot escape keeps every user
 * name away from `.git` in all its spellings (`git fsck --strict` rejects a `.git` tree entry, `.GIT`, `.git.`
 * and HFS variants included) and reserves names starting with `.` for the store itself.
 *
 * Record ("sidecar"): `.kyozo/meta/<the same escaped path>` holds a small JSON document per key: etag (sha256),
 * size, the git blob id of the content it describes, contentType, metadata, updatedAt and a revision number that
 * every write of the key increments. It changes in the same commit as the content, so a commit is one consistent
 * state, and because the revision always moves, every write of a key changes its record even when the bytes are
 * identical: the commits that touched a key are exactly `git log -- <content path> <record path>`.
 */
import { InvalidArgumentError } from './errors.js';
import { isWellFormed, validateKey } from './keys.js';

export const RECORD_ROOT = ['.kyozo', 'meta'] as const;

/** Trailer of a `delete(key, { allVersions: true })` commit: the key's earlier versions leave `listVersions`. */
export const FORGET_TRAILER = 'Kyozo-Forget-Versions';

// git's is_hfs_dotgit() skips these when it compares names, so `.\u200Cgit` is `.git` on HFS+.
const ESCAPED = /[%~\u200C-\u200F\u202A-\u202E\u206A-\u206F\uFEFF]/g;

function escapeSegment(segment: string): string {
  let escaped = segment.replace(ESCAPED, (char) => (char === '~' ? '%7E' : encodeURIComponent(char)));
  if (escaped.startsWith('.')) escaped = `%2E${escaped.slice(1)}`;
  else if (escaped.startsWith(' ')) escaped = `%20${escaped.slice(1)}`;
  return escaped;
}

/** Tree path segments of a (valid) key's content file. */
export function contentPath(key: string): string[] {
  const segments = key.split('/').map(escapeSegment);
  segments[segments.length - 1] += '~';
  return segments;
}

/** Tree path segments of a key's record. */
export function recordPath(key: string): string[] {
  return [...RECORD_ROOT, ...contentPath(key)];
}

/** `docs/guide.md~` for `docs/guide.md`: what to give `git log --` and `git show <commit>:`. */
export function treePathOf(key: string): string {
  return contentPath(key).join('/');
}

/**
 * The key a content path (segments, relative to the tree root or to the record root) stands for, or undefined for
 * paths the store did not write (files without the `~`, names that are not this escaping's canonical form).
 */
export function keyOfPath(segments: readonly string[]): string | undefined {
  const last = segments.at(-1);
  if (last === undefined || !last.endsWith('~')) return undefined;
  const escaped = [...segments.slice(0, -1), last.slice(0, -1)];
  try {
    const decoded = escaped.map((segment) => decodeURIComponent(segment));
    if (decoded.some((segment, i) => escapeSegment(segment) !== escaped[i])) return undefined;
    return validateKey(decoded.join('/'));
  } catch {
    return undefined;
  }
}

export function isRecordPath(segments: readonly string[]): boolean {
  return segments.length > RECORD_ROOT.length && RECORD_ROOT.every((name, i) => segments[i] === name);
}

/** What `.kyozo/meta/<path>` holds for one key. */
export interface KeyRecord {
  etag: string;
  size: number;
  /** Git blob id of the content this record describes: a record left behind by a foreign edit is detectable. */
  blob: string;
  contentType: string;
  metadata: Record<string, string>;
  updatedAt: string;
  revision: number;
}

export function encodeRecord(record: KeyRecord): Buffer {
  const { etag, size, blob, contentType, metadata, updatedAt, revision } = record;
  return Buffer.from(`${JSON.stringify({ etag, size, blob, contentType, metadata, updatedAt, revision }, null, 2)}\n`, 'utf8');
}

/** A record as the store wrote it, or undefined for anything else (hand-edited into another shape, not JSON). */
export function decodeRecord(bytes: Buffer): KeyRecord | undefined {
  try {
    const value = JSON.parse(bytes.toString('utf8')) as Partial<KeyRecord>;
    if (
      typeof value.etag !== 'string' ||
      typeof value.size !== 'number' ||
      typeof value.blob !== 'string' ||
      typeof value.contentType !== 'string' ||
      typeof value.updatedAt !== 'string' ||
      typeof value.metadata !== 'object' ||
      value.metadata === null
    ) {
      return undefined;
    }
    const metadata: Record<string, string> = {};
    for (const [name, entry] of Object.entries(value.metadata)) if (typeof entry === 'string') metadata[name] = entry;
    return {
      etag: value.etag,
      size: value.size,
      blob: value.blob,
      contentType: value.contentType,
      metadata,
      updatedAt: value.updatedAt,
      revision: typeof value.revision === 'number' ? value.revision : 0,
    };
  } catch {
    return undefined;
  }
}

/**
 * The trailer line that forgets `key`. The key is a JSON string: git tools that tidy a message (`commit --amend`,
 * `interpret-trailers`) strip trailing whitespace, and a key may end in a space, an NBSP or a U+3000.
 */
export function forgetTrailer(key: string): string {
  return `${FORGET_TRAILER}: ${JSON.stringify(key)}`;
}

/**
 * The keys a commit message asks to forget. The index honours them only from a commit that changed no other key,
 * and only for keys absent after it (`describeCommit`). Reads the JSON form and the plain `<key>` of repositories
 * written before it (a plain key that is itself a JSON string, `"x"`, reads as the JSON form: `x`).
 */
export function forgottenKeys(message: string): string[] {
  // Only line breaks are trimmed: spaces at the end belong to the last plain key.
  const paragraphs = message.replace(/[\r\n]+$/, '').split(/\n\n+/);
  const trailers = paragraphs.length > 1 ? (paragraphs.at(-1) ?? '') : '';
  const prefix = `${FORGET_TRAILER}: `;
  const keys: string[] = [];
  for (const line of trailers.split('\n')) {
    if (line.startsWith(prefix)) keys.push(decodeTrailerKey(line.slice(prefix.length)));
  }
  return keys;
}

function decodeTrailerKey(value: string): string {
  if (value.startsWith('"')) {
    try {
      const key: unknown = JSON.parse(value);
      if (typeof key === 'string') return key;
    } catch {
      // a plain key that starts with a quote
    }
  }
  return value;
}

/**
 * Branch names as `git check-ref-format --branch` accepts them, minus the odd corners (`@`, leading `-`) a store
 * has no use for, and minus names that read as a commit id: diff and createBranch take "a version id or a branch
 * name", and such a branch could never be named there.
 */
export function validateBranchName(name: unknown): string {
  const bad = (why: string) => new InvalidArgumentError(`branch name ${JSON.stringify(name)} ${why}`);
  if (typeof name !== 'string' || name === '') throw bad('must be a non-empty string');
  if (Buffer.byteLength(name) > 200) throw bad('is longer than 200 bytes');
  if (/[\u0000-\u0020\u007f~^:?*[\\]/.test(name)) throw bad('must not contain spaces, control characters or ~ ^ : ? * [ \\');
  if (name.includes('..') || name.includes('@{') || name.includes('//')) throw bad("must not contain '..', '@{' or '//'");
  if (isObjectId(name)) throw bad('must not be 40 hexadecimal digits (that reads as a commit id)');
  if (name.startsWith('-') || name.startsWith('/') || name.endsWith('/') || name.endsWith('.') || name === '@' || name === 'HEAD') {
    throw bad("must not start with '-' or '/', end with '/' or '.', or be '@' or 'HEAD'");
  }
  for (const part of name.split('/')) {
    if (part.startsWith('.') || part.endsWith('.lock')) throw bad("must not have a part starting with '.' or ending with '.lock'");
  }
  return name;
}

/** A commit id as git writes it: 40 lowercase hexadecimal digits. */
export function isObjectId(value: string): boolean {
  return /^[0-9a-f]{40}$/.test(value);
}

/** A lone surrogate has no UTF-8 encoding: the commit would hold U+FFFD, and the text read back would differ. */
export function checkUnicode(value: string, what: string): void {
  if (!isWellFormed(value)) throw new InvalidArgumentError(`${what} is not valid Unicode`);
}

/**
 * The author as given is the author recorded: a version job that retries recognises its own version by it, so
 * spaces around a name or email are refused rather than trimmed away.
 */
export function checkIdentityPart(value: unknown, what: string, required: boolean): string {
  if (typeof value !== 'string') {
    if (!required && value === undefined) return '';
    throw new InvalidArgumentError(`${what} must be a string`);
  }
  // '<', '>' and line breaks would end the name or email early in the commit's author line.
  if (/[<>\n\r\u0000]/.test(value)) throw new InvalidArgumentError(`${what} must not contain '<', '>' or line breaks`);
  if (required && value === '') throw new InvalidArgumentError(`${what} must not be empty`);
  if (value.trim() !== value) throw new InvalidArgumentError(`${what} must not start or end with whitespace`);
  checkUnicode(value, what);
  return value;
}
