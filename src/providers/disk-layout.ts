/**
 * How keys map to paths in a disk store, and back. Keys `a` and `a/b` must coexist (as on S3), so an object is a
 * file whose name ends in `~` and a key segment is a directory:
 *
 *   key `a`         -> `a~`
 *   key `a/b`       -> `a/b~`
 *   key `50%~+`     -> `50%25%7E%2B~`       (only `%`, `~` and `+` are escaped: the tree stays readable)
 *   a long segment  -> `<200 bytes>+/<rest>~` (every piece but the last is a directory ending in `+`)
 *
 * No escaped segment ends in a literal `~` or `+`, so an object file never collides with a segment directory or a
 * continuation. Pieces keep ext4's 255-byte name limit for 1,024-byte keys of one segment (up to 3,072 bytes
 * escaped). Decoding a walk of the tree gives back the key; names that do not decode (temp files) are skipped.
 */
import path from 'node:path';

export const OBJECT_MARK = '~';
export const CONTINUATION_MARK = '+';
const PIECE_BYTES = 200;

const ESCAPES: Record<string, string> = { '%': '%25', '~': '%7E', '+': '%2B' };
const UNESCAPES: Record<string, string> = { '%25': '%', '%7E': '~', '%2B': '+' };
/** An escape sequence or one code point: the units a segment is split between, never inside. */
const UNIT = /%[0-9A-F]{2}|[\s\S]/gu;

function escapeSegment(segment: string): string {
  return segment.replace(/[%~+]/g, (c) => ESCAPES[c]!);
}

/** The escaped segment in pieces of at most PIECE_BYTES. */
export function segmentPieces(segment: string): string[] {
  const escaped = escapeSegment(segment);
  if (Buffer.byteLength(escaped, 'utf8') <= PIECE_BYTES) return [escaped];
  const pieces: string[][] = [[]];
  let bytes = 0;
  for (const unit of escaped.match(UNIT)!) {
    const size = Buffer.byteLength(unit, 'utf8');
    if (bytes + size > PIECE_BYTES) {
      pieces.push([]);
      bytes = 0;
    }
    pieces[pieces.length - 1]!.push(unit);
    bytes += size;
  }
  // A last piece `.` or `..` would, as a directory, name the directory itself or its parent: borrow from the piece
  // before (decoding only concatenates, so where a piece ends does not matter).
  const last = pieces[pieces.length - 1]!;
  while (last.join('') === '.' || last.join('') === '..') last.unshift(pieces[pieces.length - 2]!.pop()!);
  return pieces.map((units) => units.join(''));
}

/** Path components of a run of complete segments: directories only. */
function segmentDirectories(segments: string[]): string[] {
  return segments.flatMap((segment) => {
    const pieces = segmentPieces(segment);
    return pieces.map((piece, i) => (i < pieces.length - 1 ? piece + CONTINUATION_MARK : piece));
  });
}

/** The path of `key`'s file (or, under `versions/`, its directory of versions), relative to the tree's root. */
export function keyPath(key: string): string {
  const segments = key.split('/');
  const last = segmentDirectories([segments.pop()!]);
  last[last.length - 1] += OBJECT_MARK;
  return path.join(...segmentDirectories(segments), ...last);
}

/** The deepest directory every key starting with `prefix` lies under, and the key prefix that directory stands for. */
export function prefixDirectory(prefix: string): { dir: string; keyPrefix: string } {
  const cut = prefix.lastIndexOf('/');
  if (cut < 0) return { dir: '', keyPrefix: '' };
  const keyPrefix = prefix.slice(0, cut + 1);
  return { dir: path.join(...segmentDirectories(keyPrefix.slice(0, -1).split('/'))), keyPrefix };
}

function unescapeName(name: string): string | undefined {
  let bad = false;
  const decoded = name.replace(/%(?:[0-9A-F]{2})?/g, (escape) => {
    const plain = UNESCAPES[escape];
    if (plain === undefined) bad = true;
    return plain ?? '';
  });
  return bad ? undefined : decoded;
}

/**
 * What a directory entry contributes to the keys below it: `object` is a whole last segment, `segment` a
 * complete segment followed by `/`, `continuation` the first part of a long segment. Undefined: not ours.
 */
export function decodeEntry(name: string, isDirectory: boolean): { kind: 'object' | 'segment' | 'continuation'; part: string } | undefined {
  const mark = name.at(-1);
  if (!isDirectory) {
    if (mark !== OBJECT_MARK) return undefined;
    const part = unescapeName(name.slice(0, -1));
    return part ? { kind: 'object', part } : undefined;
  }
  if (mark === OBJECT_MARK) return undefined;
  const continuation = mark === CONTINUATION_MARK;
  const part = unescapeName(continuation ? name.slice(0, -1) : name);
  if (!part) return undefined;
  return continuation ? { kind: 'continuation', part } : { kind: 'segment', part: `${part}/` };
}
