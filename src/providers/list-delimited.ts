/**
 * A listing that groups keys by a delimiter, as S3's `delimiter` does: the keys under `prefix` that hold no
 * `delimiter` after it come as objects, and every key that does is rolled up into its common prefix (`prefix`, up to
 * and including the first delimiter after it), listed once. With `/` that is one level of a directory tree.
 *
 * Built on the contract's `list`, so every store has it. Once a common prefix is listed, the rest of its keys are
 * jumped over: the store's listing goes on from a position past every key that starts with it (`pastEveryKeyUnder`),
 * so a "directory" of a million keys costs at most one more short page of the store, not a thousand. A page that ends
 * on an object continues after it as a plain listing would (its cursor is one); one that ends on a common prefix has a
 * cursor of its own kind (`encodePastPrefixCursor`), which continues past that prefix's keys.
 */
import { decodePastPrefixCursor, encodeCursor, encodePastPrefixCursor, pageLimit } from './cursor.js';
import { InvalidArgumentError, NotFoundError } from './errors.js';
import { mapLimit } from './map-limit.js';
import type { ListOptions, ObjectInfo, StorageProvider } from './types.js';

export const MAX_DELIMITER_LENGTH = 64;

export interface DelimitedPage {
  items: ObjectInfo[];
  /** Common prefixes, each ending with the delimiter. Items and prefixes together are at most `limit`. */
  prefixes: string[];
  cursor?: string;
}

/**
 * A position after every key that starts with `prefix`, in UTF-8 byte order: `prefix` and U+10FFFF, the largest
 * character. Only a key that goes on with U+10FFFF itself (a noncharacter, which no text should hold) sorts after it:
 * the listing pages through such keys rather than jumping.
 */
export function pastEveryKeyUnder(prefix: string): string {
  return `${prefix}\u{10ffff}`;
}

/**
 * Keys asked of the store at a time. A page that ends inside a common prefix read the rest of its keys for nothing,
 * so pages are short, whatever the limit: a jump comes after at most this many.
 */
const STORE_PAGE = 64;
/** Objects described at once, on a store that lists keys alone (s3: a HEAD each). */
const DESCRIBE_WIDTH = 16;

type Lister = Pick<StorageProvider, 'list' | 'listKeys' | 'stat'>;

/**
 * A page of the store's keys, each with its ObjectInfo when the store's listing gives it. A store that can list keys
 * alone (`listKeys`) is asked for those: the keys a common prefix rolls up are then never described.
 */
async function storePage(provider: Lister, opts: ListOptions): Promise<{ entries: { key: string; info?: ObjectInfo }[]; cursor?: string }> {
  if (provider.listKeys !== undefined) {
    const { items, cursor } = await provider.listKeys(opts);
    return { entries: items.map((key) => ({ key })), cursor };
  }
  const { items, cursor } = await provider.list(opts);
  return { entries: items.map((info) => ({ key: info.key, info })), cursor };
}

/** The objects of a page, described where the store listed keys alone; one deleted meanwhile is left out. */
async function described(provider: Lister, entries: { key: string; info?: ObjectInfo }[]): Promise<ObjectInfo[]> {
  const infos = await mapLimit(entries, DESCRIBE_WIDTH, async ({ key, info }) =>
    info ?? provider.stat(key).catch((error: unknown) => (error instanceof NotFoundError ? undefined : Promise.reject(error))),
  );
  return infos.filter((info): info is ObjectInfo => info !== undefined);
}

/** `candidate` is a common prefix of a listing of `prefix` by `delimiter`: its first delimiter after the prefix ends it. */
function isCommonPrefix(candidate: string, prefix: string, delimiter: string): boolean {
  return candidate.startsWith(prefix) && candidate.indexOf(delimiter, prefix.length) === candidate.length - delimiter.length;
}

export async function listDelimited(
  provider: Lister,
  opts: { prefix?: string; delimiter: string; cursor?: string; limit?: number },
): Promise<DelimitedPage> {
  const { prefix = '', delimiter } = opts;
  if (delimiter.length === 0 || delimiter.length > MAX_DELIMITER_LENGTH) {
    throw new InvalidArgumentError(`delimiter must be 1 to ${MAX_DELIMITER_LENGTH} characters`);
  }
  const limit = pageLimit(opts.limit);
  const pageSize = Math.min(STORE_PAGE, limit + 1);
  const items: { key: string; info?: ObjectInfo }[] = [];
  const prefixes: string[] = [];
  const page = async (cursor?: string): Promise<DelimitedPage> => ({ items: await described(provider, items), prefixes, ...(cursor === undefined ? {} : { cursor }) });
  /** The common prefix whose keys are being stepped over: to begin with, the one the cursor continues past. */
  let skipping = decodePastPrefixCursor(opts.cursor);
  if (skipping !== undefined && !isCommonPrefix(skipping, prefix, delimiter)) {
    throw new InvalidArgumentError('cursor is not one of a listing of this prefix and delimiter');
  }
  /** The last common prefix jumped past. */
  let jumped = skipping;
  /** The cursor after the last entry taken: where the next page of this listing starts. */
  let after = opts.cursor;
  /** Where the next page of the store's own listing starts. */
  let listFrom = skipping === undefined ? opts.cursor : encodeCursor(pastEveryKeyUnder(skipping));
  for (;;) {
    const listed = await storePage(provider, { prefix, cursor: listFrom, limit: pageSize });
    for (const entry of listed.entries) {
      const { key } = entry;
      if (skipping !== undefined && key.startsWith(skipping)) continue;
      skipping = undefined;
      // One entry more than the page holds: there is a next page, and it starts after the last entry taken.
      if (items.length + prefixes.length === limit) return page(after);
      const at = key.indexOf(delimiter, prefix.length);
      if (at === -1) {
        items.push(entry);
        after = encodeCursor(key);
      } else {
        skipping = key.slice(0, at + delimiter.length);
        prefixes.push(skipping);
        after = encodePastPrefixCursor(skipping);
      }
    }
    if (listed.cursor === undefined) return page();
    // Inside a common prefix at the end of the page: jump past its keys, once. Those still listed after the jump (they
    // go on with U+10FFFF, or the store's order is not UTF-8 byte order) are paged through, not jumped over for ever.
    if (skipping !== undefined && skipping !== jumped) {
      jumped = skipping;
      listFrom = encodeCursor(pastEveryKeyUnder(skipping));
    } else {
      listFrom = listed.cursor;
    }
  }
}
