/** A page of keys alone: through `listKeys` where the store has it (s3 reads no object's head then), else `list`. */
import type { ListOptions, Page, StorageProvider } from './types.js';

export async function keysPage(provider: Pick<StorageProvider, 'list' | 'listKeys'>, opts: ListOptions): Promise<Page<string>> {
  if (provider.listKeys !== undefined) return provider.listKeys(opts);
  const { items, cursor } = await provider.list(opts);
  const keys = items.map((info) => info.key);
  return cursor === undefined ? { items: keys } : { items: keys, cursor };
}
