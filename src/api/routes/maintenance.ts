/**
 * `POST /v1/maintenance/{tier,cleanup,backup,restore-backup,migrate}`: JSON bodies (at most 64 KiB; an empty body
 * is `{}`), enqueued as jobs of the maintenance family. 202 `{ jobId, statusUrl }`; `?wait=true` waits up to
 * `WAIT_TIMEOUT_MS` and answers 200 `{ jobId, state, result }` (DESIGN §8). Stores named in the body must exist
 * (404); everything else about the body is checked by the job's own schema (400).
 */
import { Hono, type Context } from 'hono';
import type { JobName, PayloadOf } from '../../jobs/index.js';
import { PayloadTooLargeError } from '../../providers/errors.js';
import type { AppDeps } from '../app.js';
import { ApiError } from '../errors.js';
import { requestHeader } from '../node-request.js';
import { requireStore } from '../stores.js';
import { respondWithJob } from '../submit.js';

const MAX_BODY_BYTES = 64 * 1024;

/** Each task, and the body fields that name stores. */
const TASKS = {
  tier: ['store'],
  cleanup: ['store'],
  backup: ['store', 'target'],
  'restore-backup': ['store', 'from'],
  migrate: ['from', 'to'],
} as const satisfies Partial<Record<JobName, readonly string[]>>;

export const MAINTENANCE_TASKS = Object.keys(TASKS) as (keyof typeof TASKS)[];

async function readBody(c: Context): Promise<string> {
  const declared = requestHeader(c, 'content-length');
  if (declared !== undefined && Number(declared) > MAX_BODY_BYTES) {
    throw new PayloadTooLargeError(`a maintenance request body is at most ${MAX_BODY_BYTES} bytes`);
  }
  const raw = c.req.raw.body;
  if (raw === null) return '';
  const chunks: Uint8Array[] = [];
  let bytes = 0;
  for await (const chunk of raw as unknown as AsyncIterable<Uint8Array>) {
    bytes += chunk.length;
    if (bytes > MAX_BODY_BYTES) throw new PayloadTooLargeError(`a maintenance request body is at most ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, bytes).toString('utf8');
}

async function jsonObject(c: Context): Promise<Record<string, unknown>> {
  const text = await readBody(c);
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

export function maintenanceRoutes(deps: AppDeps): Hono {
  const app = new Hono();
  for (const task of MAINTENANCE_TASKS) {
    app.post(`/${task}`, async (c) => {
      const body = await jsonObject(c);
      for (const field of TASKS[task]) {
        const name = body[field];
        if (typeof name === 'string') requireStore(deps, name);
      }
      if (task === 'backup' && body.target === undefined && deps.config.maintenance.backupStore === undefined) {
        throw new ApiError('BAD_REQUEST', 'target: no BACKUP_STORE is configured, so the body must name the target store');
      }
      if (task === 'restore-backup' && body.from === undefined && deps.config.maintenance.backupStore === undefined) {
        throw new ApiError('BAD_REQUEST', 'from: no BACKUP_STORE is configured, so the body must name the store holding the backup');
      }
      return respondWithJob(c, deps, task, body as PayloadOf<typeof task>, { waitAnswer: 'status' });
    });
  }
  return app;
}
