/**
 * `POST /v1/maintenance/{tier,cleanup,backup,restore-backup,migrate}`: JSON bodies sent as `application/json` (415
 * otherwise; at most 64 KiB; an empty body is `{}`), enqueued as jobs of the maintenance family. 202
 * `{ jobId, statusUrl }`; `?wait=true` waits up to `WAIT_TIMEOUT_MS` and answers 200 `{ jobId, state, result }`
 * (DESIGN §8). Stores named in the body must exist
 * (404); everything else about the body is checked by the job's own schema and checks (400), so that a body the
 * job could never run is refused here rather than enqueued to fail.
 */
import { Readable } from 'node:stream';
import { Hono, type Context } from 'hono';
import { backupJob, backupTarget } from '../../jobs/backup.js';
import { parsePayload } from '../../jobs/definition.js';
import { jobDefinition, type JobName, type PayloadOf } from '../../jobs/index.js';
import { checkMigration, migrateJob } from '../../jobs/migrate.js';
import { backupSource, restoreBackupJob } from '../../jobs/restore-backup.js';
import { requireTiered, tierJob } from '../../jobs/tier.js';
import { PayloadTooLargeError } from '../../providers/errors.js';
import type { AppDeps } from '../app.js';
import { ApiError } from '../errors.js';
import { refuseOtherMethods } from '../method-not-allowed.js';
import { requestHeader } from '../node-request.js';
import { requireStore } from '../stores.js';
import { BODY_IDLE_TIMEOUT_MS, bodyTimedOut, idleLimited, jobRequest, requireJsonBody, respondWithJob } from '../submit.js';

const MAX_BODY_BYTES = 64 * 1024;

/** Each task, and the body fields that name stores. */
const TASKS = {
  tier: ['store'],
  cleanup: ['store'],
  backup: ['store', 'target'],
  'restore-backup': ['store', 'from'],
  migrate: ['from', 'to'],
} as const satisfies Partial<Record<JobName, readonly string[]>>;

type Task = keyof typeof TASKS;

export const MAINTENANCE_TASKS = Object.keys(TASKS) as Task[];

/** The body as text; one that sends nothing for `idleMs` is 408, as an object body is. */
async function readBody(c: Context, idleMs: number): Promise<string> {
  const declared = requestHeader(c, 'content-length');
  if (declared !== undefined && Number(declared) > MAX_BODY_BYTES) {
    throw new PayloadTooLargeError(`a maintenance request body is at most ${MAX_BODY_BYTES} bytes`);
  }
  const raw = c.req.raw.body;
  if (raw === null) return '';
  const limited = idleLimited(Readable.fromWeb(raw as import('node:stream/web').ReadableStream<Uint8Array>), idleMs);
  const chunks: Uint8Array[] = [];
  let bytes = 0;
  try {
    for await (const chunk of limited.body as AsyncIterable<Uint8Array>) {
      bytes += chunk.length;
      if (bytes > MAX_BODY_BYTES) throw new PayloadTooLargeError(`a maintenance request body is at most ${MAX_BODY_BYTES} bytes`);
      chunks.push(chunk);
    }
  } catch (error) {
    if (limited.expired()) throw bodyTimedOut(idleMs);
    throw error;
  } finally {
    limited.body.destroy();
  }
  return Buffer.concat(chunks, bytes).toString('utf8');
}

async function jsonObject(c: Context, idleMs: number): Promise<Record<string, unknown>> {
  requireJsonBody(c);
  const text = await readBody(c, idleMs);
  if (text.trim() === '') return {};
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (error) {
    throw new ApiError('BAD_REQUEST', `the request body is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new ApiError('BAD_REQUEST', 'the request body must be a JSON object');
  return body as Record<string, unknown>;
}

/** Refuses a body its job could never run, with the job's own checks; a manifest that does not exist is 404. */
async function refuseUnrunnable(deps: AppDeps, task: Task, body: unknown): Promise<void> {
  const { backupStore } = deps.config.maintenance;
  switch (task) {
    case 'backup':
      backupTarget(parsePayload(backupJob, body), backupStore);
      return;
    case 'migrate':
      checkMigration(parsePayload(migrateJob, body));
      return;
    case 'restore-backup': {
      const payload = parsePayload(restoreBackupJob, body);
      await requireStore(deps, backupSource(payload, backupStore)).stat(payload.manifest);
      return;
    }
    case 'tier': {
      const { store } = parsePayload(tierJob, body);
      if (store !== undefined) requireTiered(store, requireStore(deps, store));
      return;
    }
  }
}

export function maintenanceRoutes(deps: AppDeps): Hono {
  const app = new Hono();
  for (const task of MAINTENANCE_TASKS) {
    app.post(`/${task}`, async (c) => {
      const request = jobRequest(c);
      const body = await jsonObject(c, deps.bodyIdleTimeoutMs ?? BODY_IDLE_TIMEOUT_MS);
      for (const field of TASKS[task]) {
        const name = body[field];
        if (typeof name === 'string') requireStore(deps, name);
      }
      // Every task's body through its job's schema here, before anything else reads it (400 for a stray field).
      parsePayload(jobDefinition(task)!, body);
      // A repeat under its Idempotency-Key is answered with its job, even once its manifest was pruned.
      if ((await deps.queues.madeBefore(task, body as PayloadOf<typeof task>, request)) === undefined) await refuseUnrunnable(deps, task, body);
      return respondWithJob(c, deps, request, task, body as PayloadOf<typeof task>, { waitAnswer: 'status' });
    });
  }
  return refuseOtherMethods(app);
}
