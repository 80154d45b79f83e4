/**
 * A listing that groups keys by a delimiter, as S3's `delimiter` does: the keys under `prefix` that hold no
 * `delimiter` after it come as objects, and every key that does is rolled up into its common prefix (`prefix`, up to
 * and including the first delimiter after it), listed once. With `/` that is one level of a directory tree.
 *
 * Built on the contract's `list`, so every store has it. A common prefix's keys are stepped over, not read: after a
 * prefix the listing goes on from a position past every key that starts with it (`pastEveryKeyUnder`), so a
 * "directory" of a million keys costs one more page, not a thousand. Cursors are ordinary list cursors (a position to
 * continue after), so a page ends and resumes anywhere, also right after a common prefix.
 */
import { decodeCursor, encodeCursor, pageLimit } from './cursor.js';
import { InvalidArgumentError } from './errors.js';
import type { ObjectInfo, StorageProvider } from './types.js';

export const MAX_DELIMITER_LENGTH = 64;

export interface DelimitedPage {
  items: ObjectInfo[];
  /** Common prefixes, each ending with the delimiter. Items and prefixes together are at most `limit`. */
  prefixes: string[];
  cursor?: string;
}

/** The largest character: no key under a prefix sorts after the prefix and it, but one that goes on with it. */
const LAST_CHARACTER = '\u{10ffff}';

/**
 * A position after every key that starts with `prefix`, in UTF-8 byte order: `prefix` and U+10FFFF. Only a key that
 * goes on with U+10FFFF itself (a noncharacter, which no text should hold) sorts after it: the listing pages through
 * such keys rather than jumping, also when a cursor starts it there.
 */
export function pastEveryKeyUnder(prefix: string): string {
  return `${prefix}${LAST_CHARACTER}`;
}

/** The common prefix (of this prefix and delimiter) a cursor jumped past (`pastEveryKeyUnder`), if it names one. */
function jumpedPrefix(cursor: string | undefined, prefix: string, delimiter: string): string | undefined {
  const position = decodeCursor(cursor);
  if (!position?.endsWith(LAST_CHARACTER)) return undefined;
  const jumped = position.slice(0, -LAST_CHARACTER.length);
  // Its first delimiter after the prefix ends it, as in every common prefix; an item's key never reads so.
  const at = jumped.startsWith(prefix) ? jumped.indexOf(delimiter, prefix.length) : -1;
  return at !== -1 && at === jumped.length - delimiter.length ? jumped : undefined;
}

/**
 * Keys asked of the store at a time. A page that ends inside a common prefix read the rest of its keys for nothing
 * (an s3 store reads each key's head), so pages are short, whatever the limit: a jump comes after at most this many.
 */
const STORE_PAGE = 64;

export async function listDelimited(
  provider: Pick<StorageProvider, 'list'>,
  opts: { prefix?: string; delimiter: string; cursor?: string; limit?: number },
): Promise<DelimitedPage> {
  const { prefix = '', delimiter } = opts;
  if (delimiter.length === 0 || delimiter.length > MAX_DELIMITER_LENGTH) {
    throw new InvalidArgumentError(`delimiter must be 1 to ${MAX_DELIMITER_LENGTH} characters`);
  }
  const limit = pageLimit(opts.limit);
  const pageSize = Math.min(STORE_PAGE, limit + 1);
  const items: ObjectInfo[] = [];
  const prefixes: string[] = [];
  /** The cursor after the last entry taken: where the next page of this listing starts. */
  let after = opts.cursor;
  /** Where the next page of the store's own listing starts. */
  let listFrom = opts.cursor;
  /** The common prefix whose keys are being stepped over, and the last one jumped past (the cursor's, to begin with). */
  let skipping = jumpedPrefix(opts.cursor, prefix, delimiter);
  let jumped = skipping;
  for (;;) {
    const page = await provider.list({ prefix, cursor: listFrom, limit: pageSize });
    for (const info of page.items) {
      if (skipping !== undefined && info.key.startsWith(skipping)) continue;
      skipping = undefined;
      // One entry more than the page holds: there is a next page, and it starts after the last entry taken.
      if (items.length + prefixes.length === limit) return { items, prefixes, cursor: after };
      const at = info.key.indexOf(delimiter, prefix.length);
      if (at === -1) {
        items.push(info);
        after = encodeCursor(info.key);
      } else {
        skipping = info.key.slice(0, at + delimiter.length);
        prefixes.push(skipping);
        after = encodeCursor(pastEveryKeyUnder(skipping));
      }
    }
    if (page.cursor === undefined) return { items, prefixes };
    // Inside a common prefix at the end of the page: jump past its keys, once. Those still listed after the jump (they
    // go on with U+10FFFF, or the store's order is not UTF-8 byte order) are paged through, not jumped over for ever.
    if (skipping !== undefined && skipping !== jumped) {
      jumped = skipping;
      listFrom = after;
    } else {
      listFrom = page.cursor;
    }
  }
}
