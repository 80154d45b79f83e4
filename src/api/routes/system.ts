/**
 * `/health` (the process answers), `/ready` (Redis takes writes, the staging store and every store; 503 when one is down,
 * `degraded` when one only reads; and how many workers each job queue has),
 * `/metrics` (prom-client) and `/openapi.json`. `/ready` answers its details (store paths, commits, Redis errors)
 * only to a valid bearer token; a probe without one learns each part's status and the workers (counts, and store
 * names the answer lists anyway), which tell it whether jobs would wait.
 */
import { Hono } from 'hono';
import type { HealthReport } from '../../providers/types.js';
import type { AppDeps } from '../app.js';
import { hasBearer, type TokenSet } from '../auth.js';
import { refuseOtherMethods } from '../method-not-allowed.js';
import { openApiDocument } from '../openapi.js';
import { connectedWorkers } from '../../metrics.js';
import { storesServed } from '../../jobs/store-roster.js';
import { withTimeout } from '../../with-timeout.js';

const READY_TIMEOUT_MS = 2_000;
/** How long the key `/ready` writes lives: a probe, gone on its own. */
const PROBE_TTL_MS = 10_000;

/**
 * Workers connected to each job queue: none means accepted jobs wait for a worker process. And the stores of this
 * process that none of the connected object workers serves (their STORES lack it): jobs for those fail NOT_FOUND.
 * Told, not judged — this process serves reads and takes jobs either way. Left out when Redis cannot tell (CLIENT
 * renamed away; a worker of an earlier version, which does not say its stores, leaves out the stores alone).
 */
async function workersOf(deps: Pick<AppDeps, 'queues' | 'redis' | 'config' | 'stores'>): Promise<{ workers: Record<string, number>; storesWithoutWorker?: string[] } | undefined> {
  const listing = Promise.all(deps.queues.all().map(async (queue) => [queue.name, await connectedWorkers(queue)] as const));
  const read = await withTimeout(listing, READY_TIMEOUT_MS, 'Redis CLIENT LIST').catch(() => undefined);
  if (read === undefined || read.some(([, names]) => names === undefined)) return undefined;
  const workers = Object.fromEntries(read.map(([queue, names]) => [queue, names!.length]));
  const objectWorkers = read.find(([queue]) => queue === 'objects')?.[1] ?? [];
  if (objectWorkers.length === 0) return { workers };
  const served = await withTimeout(storesServed(deps.redis, deps.config.queuePrefix, objectWorkers), READY_TIMEOUT_MS, 'the workers\' stores').catch(() => undefined);
  return served === undefined ? { workers } : { workers, storesWithoutWorker: [...deps.stores.keys()].filter((store) => !served.has(store)) };
}

export function systemRoutes(deps: AppDeps, tokens: TokenSet): Hono {
  const app = new Hono();

  app.get('/health', (c) => c.json({ status: 'ok', uptimeSeconds: Math.round(process.uptime()) }));

  app.get('/ready', async (c) => {
    const started = performance.now();
    // A write, not a PING: a Redis at maxmemory (noeviction) or a replica answers PING but refuses every job.
    const probe = deps.redis.set(`${deps.config.queuePrefix}:ready-probe`, '1', 'PX', PROBE_TTL_MS);
    const redis = await withTimeout(probe, READY_TIMEOUT_MS, 'Redis')
      .then(() => ({ status: 'ok' as const, detail: 'takes writes', latencyMs: Math.round(performance.now() - started) }))
      .catch((error: Error) => ({ status: 'down' as const, detail: error.message, latencyMs: Math.round(performance.now() - started) }));
    const health = (report: Promise<HealthReport>, what: string): Promise<HealthReport> =>
      withTimeout(report, READY_TIMEOUT_MS, what).catch((error: Error) => ({ status: 'down' as const, detail: error.message, latencyMs: READY_TIMEOUT_MS }));
    const [stores, staging] = await Promise.all([
      Promise.all([...deps.stores].map(async ([name, provider]): Promise<[string, HealthReport]> => [name, await health(provider.health(), `store ${name}`)])).then(
        Object.fromEntries<HealthReport>,
      ),
      // Every body over STAGING_INLINE_MAX passes through it: down, no upload of that size is taken.
      health(deps.staging.health(), 'the staging store'),
    ]);
    const workers = redis.status === 'ok' ? await workersOf(deps) : undefined;
    const parts = [redis, staging, ...Object.values(stores)];
    const down = parts.some((report) => report.status === 'down');
    // A part that still reads but cannot write (a full disk) leaves the process ready, as it serves reads and the
    // writes that avoid it, and is named in the answer for monitoring to see: `degraded`, 200.
    const degraded = parts.some((report) => report.status === 'degraded');
    const detailed = hasBearer(c, tokens);
    const shown = (report: { status: string }) => (detailed ? report : { status: report.status });
    const body = {
      status: down ? 'down' : degraded ? 'degraded' : 'ok',
      redis: shown(redis),
      staging: shown(staging),
      stores: Object.fromEntries(Object.entries(stores).map(([name, report]) => [name, shown(report)])),
      ...workers,
    };
    return c.json(body, down ? 503 : 200, down ? { 'Retry-After': '5' } : {});
  });

  app.get('/metrics', async (c) => c.text(await deps.metrics.registry.metrics(), 200, { 'Content-Type': deps.metrics.registry.contentType }));

  app.get('/openapi.json', (c) => c.json(openApiDocument()));

  return refuseOtherMethods(app);
}
