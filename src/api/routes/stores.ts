/** `GET /v1/stores` (name, kind, capabilities) and `GET /v1/stores/:store/stats`. */
import { Hono } from 'hono';
import { coalesced } from '../../providers/coalesce.js';
import type { ProviderStats } from '../../providers/types.js';
import type { AppDeps } from '../app.js';
import { refuseOtherMethods } from '../method-not-allowed.js';
import { requireStore } from '../stores.js';

export function storeRoutes(deps: AppDeps): Hono {
  const app = new Hono();
  app.get('/', (c) =>
    c.json({
      items: [...deps.stores].map(([name, provider]) => ({ name, kind: provider.kind, capabilities: provider.capabilities })),
    }),
  );
  // A store's stats walk all of it (disk, git, s3): requests that overlap share walks.
  const statsOf = new Map<string, () => Promise<ProviderStats>>();
  app.get('/:store/stats', async (c) => {
    const name = c.req.param('store');
    const provider = requireStore(deps, name);
    let stats = statsOf.get(name);
    if (stats === undefined) statsOf.set(name, (stats = coalesced(() => provider.stats())));
    return c.json(await stats());
  });
  return refuseOtherMethods(app);
}
