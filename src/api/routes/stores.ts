/** `GET /v1/stores` (name, kind, capabilities) and `GET /v1/stores/:store/stats`. */
import { Hono } from 'hono';
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
  app.get('/:store/stats', async (c) => c.json(await requireStore(deps, c.req.param('store')).stats()));
  return refuseOtherMethods(app);
}
