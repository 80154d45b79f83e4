/**
 * Bull Board at `/admin/queues`, listing every queue of the service (auth is the app's, in front of it).
 *
 * The webhook delivery queues are read-only there: a job added or edited on the board would be signed with
 * `WEBHOOK_SECRET` and delivered as an event (the worker posts only to its queue's configured URL, but the body is
 * whatever the job holds). Their deliveries are seen, not retried, cleaned or paused from the board.
 */
import { randomUUID } from 'node:crypto';
import { createBullBoard } from '@bull-board/api';
import { errorHandler as bullBoardError } from '@bull-board/api/dist/handlers/error.js';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { HonoAdapter } from '@bull-board/hono';
import { serveStatic } from '@hono/node-server/serve-static';
import type { JobsOptions, Queue } from 'bullmq';
import type { Hono } from 'hono';
import { isWebhookQueueName } from '../events/webhook-dispatcher.js';

export const BOARD_PATH = '/admin/queues';

/**
 * BullMQ's refusals of what a board user asked: job options typed (an id with ':', an id that is a number...), or an
 * action on a job in another state (promoting one that is not delayed).
 */
const REFUSED_OPTIONS = /^Custom Id cannot |is not in the delayed state/;

/**
 * Bull Board answers a thrown error as a 500 of its own shape, which its UI shows, whatever threw. BullMQ refusing
 * what a user typed in the board is the user's mistake: 400, the body as the UI reads it.
 */
function boardError(error: Error): ReturnType<typeof bullBoardError> {
  const answer = bullBoardError(error);
  return REFUSED_OPTIONS.test(error.message) ? { ...answer, status: 400 } : answer;
}

/**
 * Jobs the board adds ("Add", "Duplicate", a scheduler's "Run now") get ids of this service's form, which
 * `GET /v1/jobs/:id` finds and the worker runs: BullMQ's own would be its per-queue counter ("1", "2"...). A
 * duplicate carries the job's own id, which would make BullMQ answer with that job and add nothing: it gets a new one.
 */
class ServiceIdAdapter extends BullMQAdapter {
  constructor(
    private readonly bullQueue: Queue,
    options: { readOnlyMode: boolean },
  ) {
    super(bullQueue, options);
  }

  override async addJob(name: string, data: Record<string, unknown>, options: JobsOptions = {}) {
    const taken = typeof options.jobId === 'string' && (await this.bullQueue.getJob(options.jobId)) !== undefined;
    const jobId = options.jobId === undefined || taken ? this.newJobId() : options.jobId;
    return this.bullQueue.add(name, data, { ...options, jobId });
  }

  override async runJobSchedulerNow(id: string) {
    const scheduler = await this.bullQueue.getJobScheduler(id);
    if (!scheduler) return 'not-found' as const;
    return this.bullQueue.add(scheduler.name, scheduler.template?.data, { ...scheduler.template?.opts, jobId: this.newJobId() });
  }

  private newJobId(): string {
    return `${this.bullQueue.name}-${randomUUID()}`;
  }
}

export function boardRoutes(queues: readonly Queue[]): Hono {
  const adapter = new HonoAdapter(serveStatic).setBasePath(BOARD_PATH);
  createBullBoard({
    queues: queues.map((queue) => new ServiceIdAdapter(queue, { readOnlyMode: isWebhookQueueName(queue.name) })),
    serverAdapter: adapter,
    options: { uiConfig: { boardTitle: 'Kyozo Storage' } },
  });
  adapter.setErrorHandler(boardError); // after createBullBoard, which sets its own
  return adapter.registerPlugin();
}
