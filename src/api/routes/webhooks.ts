/**
 * `POST /v1/webhooks/redeliver`: every delivery whose attempts all failed (its receiver was down for longer than
 * the retries span, about 6 to 8 minutes) goes back to its queue, its attempts counted afresh, for each URL of this
 * process's `WEBHOOK_URLS`; the worker processes send them again. Deliveries refused as forged (a job whose url is
 * not its queue's) stay failed. The board shows the delivery queues read-only — a job edited there would be signed
 * and sent — so this is how they are retried. 200 with the count per URL; requests at once each move what the other
 * has not, and none is moved twice.
 */
import type { Queue } from 'bullmq';
import { Hono } from 'hono';
import { webhookQueueName, type Delivery } from '../../events/webhooks.js';
import type { RedisConnection } from '../../redis.js';
import type { AppDeps } from '../app.js';
import { requireRedisReady } from '../errors.js';
import { refuseOtherMethods } from '../method-not-allowed.js';
import { requireJsonBody } from '../submit.js';

/** Deliveries moved at once. */
const BATCH = 100;
/** BullMQ's count of a job's stalls, which its retry leaves as it was. */
const STALLED_COUNT_FIELD = 'stc';

/** BullMQ's refusal of a job that is not (or no longer) where it was asked for: its errors carry a number. */
function isStateRefusal(error: unknown): boolean {
  return typeof (error as { code?: unknown } | null)?.code === 'number';
}

/** Moves one failed delivery back to waiting, its counts reset; false when it is not moved. */
async function redeliver(queue: Queue<Delivery>, jobId: string, url: string, redis: RedisConnection): Promise<boolean> {
  const job = await queue.getJob(jobId);
  // Gone meanwhile (retention), or a job refused as forged (its url is not its queue's): that one is never sent.
  if (job === undefined || job.data.url !== url) return false;
  // Else a delivery that stalled before it gave up (its worker stopped mid-request) fails at its next stall.
  await redis.hdel(queue.toKey(jobId), STALLED_COUNT_FIELD);
  try {
    await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
    return true;
  } catch (error) {
    // No longer failed: another request (or the board of another service) moved it first.
    if (isStateRefusal(error)) return false;
    throw error;
  }
}

/** Moves `url`'s deliveries that had failed when asked back to waiting; answers how many moved. */
async function redeliverFailed(queue: Queue<Delivery>, url: string, redis: RedisConnection): Promise<number> {
  // Their ids first: the failed set changes meanwhile (new failures, another request), and a set read page by page
  // while it changes skips some.
  const jobIds = await queue.getRanges(['failed'], 0, -1);
  let redelivered = 0;
  for (let i = 0; i < jobIds.length; i += BATCH) {
    const moved = await Promise.all(jobIds.slice(i, i + BATCH).map((jobId) => redeliver(queue, jobId, url, redis)));
    redelivered += moved.filter(Boolean).length;
  }
  return redelivered;
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
      webhooks.push({ queue: queue.name, origin: new URL(url).origin, redelivered: await redeliverFailed(queue as Queue<Delivery>, url, deps.redis) });
    }
    const answer: Redelivered = { redelivered: webhooks.reduce((sum, webhook) => sum + webhook.redelivered, 0), webhooks };
    return c.json(answer);
  });
  return refuseOtherMethods(app);
}
