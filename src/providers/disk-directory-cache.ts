/**
 * Sorted listings of disk-store directories, kept between calls and checked with one stat per directory: a list
 * page or a first page of versions then costs what the page needs, not a read and sort of every name (a directory
 * of 100,000 objects took 0.8 s to read and sort, for every page).
 *
 * Processes sharing the root (web and workers) change directories behind this one's back, so a listing is used
 * again only while each directory it was read from has the inode and mtime it had just before the read. An mtime
 * is stamped from a coarse clock, though, so a change in the same tick as the stamp leaves it as it is: a read that
 * began soon after its directory's mtime (`settleNs`) may have missed such a change and is not kept, so each call
 * reads afresh while a directory is being written to. Nor do this process's own writes patch a listing in place:
 * the mtime they leave cannot tell whether another process changed the directory too.
 */
import type { Dirent } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';

/** Reads directories for a listing: what each read saw is checked before the listing is used again. */
export interface DirectoryReader {
  /** Names and their types. */
  entries(dir: string): Promise<Dirent[]>;
}

/** Builds a sorted listing, reading its directory (and any it takes entries from) through `read`. */
export type ListingBuilder<T> = (read: DirectoryReader) => Promise<T[]>;

interface Stamp {
  dir: string;
  ino: bigint;
  mtimeNs: bigint;
}

interface Listing<T> {
  items: T[];
  stamps: Stamp[];
}

const NS_PER_MS = 1_000_000n;

/**
 * How long after a directory's mtime a read of it is sure to see every change stamped with that mtime. Whole-second
 * mtimes come from a filesystem that keeps no fraction (FAT: 2 s ticks); any other is stamped from the kernel's
 * coarse clock, whose tick is 1-10 ms (HZ 1000-100) and lags the clock `Date.now()` reads by at most one tick:
 * 50 ms is five of the longest ticks. (It was 250 ms: a key written to and listed in turn, as a history view does,
 * then read its whole directory on every call for a quarter of a second after each write.)
 */
function settleNs(mtimeNs: bigint): bigint {
  return (mtimeNs % 1_000_000_000n === 0n ? 2_000n : 50n) * NS_PER_MS;
}

export class DirectoryCache<T> {
  /** Least recently used first. */
  private readonly listings = new Map<string, Listing<T>>();
  private held = 0;

  /** `maxItems`: items held across every listing; the least recently used are dropped to stay under it. */
  constructor(private readonly maxItems: number) {}

  /**
   * The listing of `dir`, held from an earlier call or made by `build` (the same for every call with this `dir`);
   * rejects as `build` does.
   */
  async get(dir: string, build: ListingBuilder<T>): Promise<readonly T[]> {
    const cached = this.listings.get(dir);
    if (cached !== undefined) {
      if (await unchanged(cached.stamps)) {
        this.keep(dir, cached);
        return cached.items;
      }
      this.drop(dir);
    }
    const stamps: Stamp[] = [];
    let settled = true;
    const stamped = async <R>(at: string, read: () => Promise<R>): Promise<R> => {
      try {
        const before = await stat(at, { bigint: true });
        settled &&= BigInt(Date.now()) * NS_PER_MS - before.mtimeNs > settleNs(before.mtimeNs);
        stamps.push({ dir: at, ino: before.ino, mtimeNs: before.mtimeNs });
        return await read();
      } catch (error) {
        // A directory that could not be read (gone meanwhile) has no stamp to check the listing by.
        settled = false;
        throw error;
      }
    };
    const items = await build({
      entries: (at) => stamped(at, () => readdir(at, { withFileTypes: true })),
    });
    if (settled && stamps.length > 0 && items.length <= this.maxItems) this.keep(dir, { items, stamps });
    return items;
  }

  /** Holds `listing` as the most recently used, dropping the least recently used ones past `maxItems`. */
  private keep(dir: string, listing: Listing<T>): void {
    this.drop(dir);
    this.listings.set(dir, listing);
    this.held += listing.items.length;
    for (const oldest of this.listings.keys()) {
      if (this.held <= this.maxItems) break;
      this.drop(oldest);
    }
  }

  private drop(dir: string): void {
    const listing = this.listings.get(dir);
    if (listing === undefined) return;
    this.listings.delete(dir);
    this.held -= listing.items.length;
  }
}

async function unchanged(stamps: Stamp[]): Promise<boolean> {
  for (const stamp of stamps) {
    const now = await stat(stamp.dir, { bigint: true }).catch(() => undefined);
    if (now?.ino !== stamp.ino || now.mtimeNs !== stamp.mtimeNs) return false;
  }
  return true;
}
