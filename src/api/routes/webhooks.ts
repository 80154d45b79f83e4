/**
 * `POST /v1/webhooks/redeliver`: every delivery whose attempts all failed (its receiver was down for longer than
 * the retries span, about 6 to 8 minutes) goes back to its queue, its attempts counted afresh, for each URL of
 * `WEBHOOK_URLS`; the worker processes send them again. The board shows the delivery queues read-only — a job
 * edited there would be signed and sent — so this is how they are retried. 200 with the count per URL.
 */
import type { Queue } from 'bullmq';
import { Hono } from 'hono';
import { webhookQueueName } from '../../events/webhooks.js';
import type { AppDeps } from '../app.js';
import { requireRedisReady } from '../errors.js';
import { refuseOtherMethods } from '../method-not-allowed.js';
import { requireJsonBody } from '../submit.js';

/** Failed deliveries read per round trip. */
const PAGE = 100;

/** Moves `queue`'s failed jobs back to waiting, attempts reset; answers how many moved. */
async function redeliverFailed(queue: Queue): Promise<number> {
  const tried = new Set<string>();
  let redelivered = 0;
  // Jobs that could not be moved stay in the failed set, ahead of the ones still to try: read past them.
  let stayed = 0;
  for (;;) {
    const page = await queue.getFailed(stayed, stayed + PAGE - 1);
    if (page.length === 0) return redelivered;
    const moved = await Promise.all(
      page.map(async (job) => {
        if (tried.has(job.id!)) return false; // failed again meanwhile: sent once per request
        tried.add(job.id!);
        // Not moved: retried or removed meanwhile (another request, retention).
        return job.retry('failed', { resetAttemptsMade: true }).then(
          () => true,
          () => false,
        );
      }),
    );
    const count = moved.filter(Boolean).length;
    redelivered += count;
    stayed += page.length - count;
  }
}

/** The answer: how many deliveries went back, in all and per URL (by its origin and queue). */
export interface Redelivered {
  redelivered: number;
  webhooks: { queue: string; origin: string; redelivered: number }[];
}

export function webhookRoutes(deps: AppDeps): Hono {
  const app = new Hono();
  app.post('/redeliver', async (c) => {
    requireJsonBody(c);
    requireRedisReady(deps.redis);
    const queues = new Map((deps.extraQueues ?? []).map((queue) => [queue.name, queue]));
    const webhooks: Redelivered['webhooks'] = [];
    for (const url of new Set(deps.config.events.webhookUrls)) {
      const queue = queues.get(webhookQueueName(url));
      if (queue === undefined) continue;
      // The origin only: a webhook URL often carries its receiver's secret in its path.
      webhooks.push({ queue: queue.name, origin: new URL(url).origin, redelivered: await redeliverFailed(queue) });
    }
    const answer: Redelivered = { redelivered: webhooks.reduce((sum, webhook) => sum + webhook.redelivered, 0), webhooks };
    return c.json(answer);
  });
  return refuseOtherMethods(app);
}
