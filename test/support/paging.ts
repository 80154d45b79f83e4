/** Reads a paginated listing to its end, following each page's cursor. */
import type { Page } from '../../src/providers/types.js';

/** The items of every page, page by page, from the first. */
export async function allPages<T>(fetch: (cursor: string | undefined) => Promise<Page<T>>): Promise<T[][]> {
  const pages: T[][] = [];
  let cursor: string | undefined;
  do {
    const page = await fetch(cursor);
    pages.push(page.items);
    cursor = page.cursor;
  } while (cursor);
  return pages;
}
