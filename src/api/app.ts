/**
 * `createApp(deps)`: the whole HTTP API as a Hono app, built only from what it is given (no globals), so tests
 * call `app.request()` against their own stores, queues and Redis. `services.ts` builds the deps for a process.
 */
import { Hono, type Context, type ErrorHandler, type NotFoundHandler } from 'hono';
import type { Queue } from 'bullmq';
import type { Config } from '../config.js';
import type { EventBus } from '../events/bus.js';
import type { JobQueues } from '../jobs/queue.js';
import type { Staging } from '../jobs/staging.js';
import type { Logger } from '../log.js';
import type { StorageProvider } from '../providers/types.js';
import type { RedisConnection } from '../redis.js';
import { requireBasic, TokenSet } from './auth.js';
import { corsPolicy } from './cors.js';
import { BOARD_PATH, boardRoutes } from './board.js';
import { refuseOtherMethods } from './method-not-allowed.js';
import { ApiError, requireRedisReady, respondWithError, toApiError } from './errors.js';
import { gate } from './gate.js';
import type { JobWaiter } from './job-status.js';
import type { ApiMetrics } from '../metrics.js';
import { eventRoutes } from './routes/events.js';
import { jobRoutes } from './routes/jobs.js';
import { maintenanceRoutes } from './routes/maintenance.js';
import { objectRoutes } from './routes/objects.js';
import { signedRoutes } from './routes/signed.js';
import { storeRoutes } from './routes/stores.js';
import { systemRoutes } from './routes/system.js';
import { webhookRoutes } from './routes/webhooks.js';
import type { UrlSigner } from './signing.js';
import { requireJsonBody } from './submit.js';

export interface AppDeps {
  config: Config;
  stores: ReadonlyMap<string, StorageProvider>;
  queues: JobQueues;
  /** Queues shown on the board besides the job queues (webhook deliveries). */
  extraQueues?: readonly Queue[];
  staging: Staging;
  bus: EventBus;
  /** A producer connection: fails fast when Redis is down, so requests get 503 instead of hanging. */
  redis: RedisConnection;
  waiter: JobWaiter;
  signer: UrlSigner;
  metrics: ApiMetrics;
  log: Logger;
  /** A request body that sends nothing for this long is answered 408 (default `BODY_IDLE_TIMEOUT_MS`, 30 s). */
  bodyIdleTimeoutMs?: number;
  /** Live events that may wait for an SSE client that does not read before it is disconnected (default 1,000). */
  sseMaxWaitingEvents?: number;
  /** `/v1/events` streams open at once in this process; one more is answered 503 (default 1,000). */
  sseMaxStreams?: number;
  /** How long one `/v1/events` stream lasts before it ends and its client comes back (default an hour). */
  sseMaxStreamMs?: number;
}

export function createApp(deps: AppDeps): Hono {
  const app = new Hono();
  const tokens = new TokenSet(deps.config.apiTokens);

  app.use('*', gate(deps, tokens, corsPolicy(deps.config.corsOrigins)));
  app.onError(answerError(deps));
  app.notFound(answerNotFound);

  app.route('/', systemRoutes(deps, tokens));
  app.route('/v1/stores', storeRoutes(deps));
  app.route('/v1/stores', objectRoutes(deps));
  app.route('/v1/jobs', jobRoutes(deps));
  app.route('/v1/maintenance', maintenanceRoutes(deps));
  app.route('/v1/events', eventRoutes(deps));
  app.route('/v1/webhooks', webhookRoutes(deps));
  app.route('/v1/signed', signedRoutes(deps));
  const board = boardApp(deps, tokens);
  // The board's own app gets the request's id with the bindings, for its error log lines.
  const toBoard = (c: Context) => board.fetch(c.req.raw, { ...(c.env as object), requestId: c.get('requestId') });
  app.all(BOARD_PATH, toBoard);
  app.all(`${BOARD_PATH}/*`, toBoard);
  return app;
}

/**
 * Bull Board as an app of its own behind basic auth: its forty-odd routes in the API's router would turn Hono's
 * fast RegExpRouter (which cannot take some of their patterns) into the slower TrieRouter for every request.
 */
function boardApp(deps: AppDeps, tokens: TokenSet): Hono {
  const board = new Hono();
  board.use('*', async (c, next) => {
    c.set('requestId', (c.env as { requestId: string }).requestId);
    await next();
  });
  board.use('*', requireBasic(tokens));
  // The board's own API answers a Redis failure with a 500 of its own shape: Redis down is the usual 503 instead.
  // It also reads any body as JSON: a body must say it is JSON, which a cross-site form or no-preflight fetch cannot.
  board.use(`${BOARD_PATH}/api/*`, async (c, next) => {
    if (c.req.method !== 'GET' && c.req.method !== 'HEAD') requireJsonBody(c);
    requireRedisReady(deps.redis);
    await next();
  });
  board.route(BOARD_PATH, boardRoutes([...deps.queues.all(), ...(deps.extraQueues ?? [])]));
  // On this app, not the board's own: that one answers whatever its handlers throw as a 500.
  refuseOtherMethods(board);
  board.onError(answerError(deps));
  board.notFound(answerNotFound);
  return board;
}

function answerError(deps: AppDeps): ErrorHandler {
  return (error, c) => {
    const apiError = toApiError(error);
    // 501 answers what the request asked for (a condition or coding this API does not take): its log line says so.
    if (apiError.status >= 500 && apiError.status !== 501) {
      deps.log.error({ requestId: c.get('requestId'), err: apiError.cause ?? error }, 'request failed');
    }
    return respondWithError(c, apiError);
  };
}

const answerNotFound: NotFoundHandler = (c) =>
  respondWithError(c, new ApiError('NOT_FOUND', `no route ${c.req.method} ${c.req.path.slice(0, 256)}`));
