/** Bull Board at `/admin/queues`, listing every queue of the service (auth is the app's, in front of it). */
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { HonoAdapter } from '@bull-board/hono';
import { serveStatic } from '@hono/node-server/serve-static';
import type { Hono } from 'hono';
import type { Queue } from 'bullmq';

export const BOARD_PATH = '/admin/queues';

export function boardRoutes(queues: readonly Queue[]): Hono {
  const adapter = new HonoAdapter(serveStatic).setBasePath(BOARD_PATH);
  createBullBoard({
    queues: queues.map((queue) => new BullMQAdapter(queue)),
    serverAdapter: adapter,
    options: { uiConfig: { boardTitle: 'Kyozo Storage' } },
  });
  return adapter.registerPlugin();
}
