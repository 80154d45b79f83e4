/**
 * Bull Board at `/admin/queues`, listing every queue of the service (auth is the app's, in front of it).
 *
 * The webhook delivery queues are read-only there: a job added or edited on the board would be signed with
 * `WEBHOOK_SECRET` and delivered as an event (the worker posts only to its queue's configured URL, but the body is
 * whatever the job holds). Their deliveries are seen, not retried, cleaned or paused from the board.
 */
import { createBullBoard } from '@bull-board/api';
import { errorHandler as bullBoardError } from '@bull-board/api/dist/handlers/error.js';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { HonoAdapter } from '@bull-board/hono';
import { serveStatic } from '@hono/node-server/serve-static';
import type { Hono } from 'hono';
import type { Queue } from 'bullmq';
import { isWebhookQueueName } from '../events/webhook-dispatcher.js';

export const BOARD_PATH = '/admin/queues';

/** BullMQ's refusals of job options a board user typed (an id with ':', an id that is a number...). */
const REFUSED_OPTIONS = /^Custom Id cannot /;

/**
 * Bull Board answers a thrown error as a 500 of its own shape, which its UI shows, whatever threw. BullMQ refusing
 * what a user typed in the board is the user's mistake: 400, the body as the UI reads it.
 */
function boardError(error: Error): ReturnType<typeof bullBoardError> {
  const answer = bullBoardError(error);
  return REFUSED_OPTIONS.test(error.message) ? { ...answer, status: 400 } : answer;
}

export function boardRoutes(queues: readonly Queue[]): Hono {
  const adapter = new HonoAdapter(serveStatic).setBasePath(BOARD_PATH);
  createBullBoard({
    queues: queues.map((queue) => new BullMQAdapter(queue, { readOnlyMode: isWebhookQueueName(queue.name) })),
    serverAdapter: adapter,
    options: { uiConfig: { boardTitle: 'Kyozo Storage' } },
  });
  adapter.setErrorHandler(boardError); // after createBullBoard, which sets its own
  return adapter.registerPlugin();
}
