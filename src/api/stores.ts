import { NotFoundError } from '../providers/errors.js';
import type { StorageProvider } from '../providers/types.js';
import type { AppDeps } from './app.js';

/** The provider of a named store, or 404 naming the stores that exist. */
export function requireStore(deps: Pick<AppDeps, 'stores'>, name: string): StorageProvider {
  const provider = deps.stores.get(name);
  if (provider === undefined) {
    throw new NotFoundError(`no store named "${name.slice(0, 64)}" (stores: ${[...deps.stores.keys()].join(', ')})`);
  }
  return provider;
}
