/** `GET /v1/jobs/:id`: a job's state, attempts, progress, result or failure reason, and timestamps. */
import { Hono } from 'hono';
import type { JobRetention } from '../../config.js';
import type { AppDeps } from '../app.js';
import { ApiError } from '../errors.js';
import { readJobStatus } from '../job-status.js';
import { refuseOtherMethods } from '../method-not-allowed.js';

/** How long finished jobs are kept, as a 404 tells it. */
function keptFor({ completedAgeSeconds, completedCount, failedAgeSeconds, failedCount }: JobRetention): string {
  return `finished jobs are kept: completed ones ${completedAgeSeconds} s, at most ${completedCount}; failed ones ${failedAgeSeconds} s, at most ${failedCount}`;
}

export function jobRoutes(deps: AppDeps): Hono {
  const app = new Hono();
  app.get('/:id', async (c) => {
    const id = c.req.param('id');
    const status = await readJobStatus(deps.queues, id);
    if (status === undefined) throw new ApiError('NOT_FOUND', `no job ${id.slice(0, 128)} (${keptFor(deps.config.jobRetention)})`);
    return c.json(status);
  });
  return refuseOtherMethods(app);
}
