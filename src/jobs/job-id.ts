/**
 * Job ids. Ours are `<queue>-<suffix>`, so `getJob(id)` knows where to look (scheduled runs have BullMQ's ids). With
 * an idempotency key the suffix is a hash of the key and the request it came with — job name and payload, a body by
 * its etag (BullMQ ids cannot contain ':'; hashing also bounds their length): adding an id that exists is a no-op in
 * BullMQ, so a repeated request makes no second job while the first is kept. A key reused for another request
 * (another object, other content) makes a job of its own instead of answering with the first one's result and
 * dropping the second.
 */
import { createHash, randomUUID } from 'node:crypto';
import { normalizeContentType } from '../providers/metadata.js';
import { DEFAULT_CONTENT_TYPE } from '../providers/types.js';
import { QUEUE_NAMES, type QueueName } from './definition.js';

/** `fingerprint`: what makes two requests the same, when not the job's payload (`EnqueueOptions.fingerprint`). */
export function jobIdFor(queue: QueueName, name: string, payload: unknown, idempotencyKey?: string, fingerprint?: unknown): string {
  if (idempotencyKey === undefined) return `${queue}-${randomUUID()}`;
  const request = fingerprint === undefined ? requestFingerprint(name, payload) : JSON.stringify([name, canonical(fingerprint)]);
  const digest = createHash('sha256').update(`${idempotencyKey}\n${request}`).digest('hex').slice(0, 40);
  return `${queue}-k${digest}`;
}

/**
 * What makes two requests the same for an idempotency key: the job and its payload, a body by its content's etag
 * (the same content sent again is staged under another name), and a Content-Type as the store records it: a
 * repeat that names the default type the first left out asks for the same object.
 */
function requestFingerprint(name: string, payload: unknown): string {
  const { body, ...rest } = payload as { body?: { etag?: string }; contentType?: string };
  if (body !== undefined) rest.contentType = recordedContentType(rest.contentType);
  return JSON.stringify([name, canonical(rest), body?.etag ?? null]);
}

/**
 * The type a store records for `contentType`, with the default left out (as most requests leave it: their ids stay
 * what they were before types were compared this way); one no store takes stays as sent (its job fails either way).
 */
function recordedContentType(contentType: string | undefined): string | undefined {
  try {
    const recorded = normalizeContentType(contentType);
    return recorded === DEFAULT_CONTENT_TYPE ? undefined : recorded;
  } catch {
    return contentType;
  }
}

/**
 * The same request whatever order its parts came in: object keys sorted (metadata is built in header order), and
 * lists of strings sorted (If-Match's etags).
 */
function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.every((item) => typeof item === 'string') ? [...value].sort() : value.map(canonical);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(
    Object.entries(value)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([key, item]) => [key, canonical(item)]),
  );
}

/** BullMQ names the jobs a job scheduler makes `repeat:<scheduler>:<time>`; only maintenance jobs are scheduled. */
const SCHEDULED_JOB_PREFIX = 'repeat:';

/** Ids this service gives (`<queue>-<uuid or digest>`) and BullMQ's scheduled ones: nothing else names a job. */
const JOB_ID = new RegExp(`^(?:(?:${QUEUE_NAMES.join('|')})-[A-Za-z0-9_-]{1,100}|${SCHEDULED_JOB_PREFIX}[A-Za-z0-9_-]{1,80}:\\d{1,16})$`);

/** The queue of job `jobId`, or undefined when the id is none this service's queues hold (another key's name). */
export function queueOfJobId(jobId: string): QueueName | undefined {
  if (!JOB_ID.test(jobId)) return undefined;
  if (jobId.startsWith(SCHEDULED_JOB_PREFIX)) return 'maintenance';
  return jobId.slice(0, jobId.indexOf('-')) as QueueName;
}
