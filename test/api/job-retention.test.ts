/**
 * `COMPLETED_JOBS_KEEP_*` and `FAILED_JOBS_KEEP_*` through the whole service: the queues the API adds to, the
 * schedules' jobs and cleanup all keep finished jobs as configured. They bound what `GET /v1/jobs/:id`, `?wait=true`
 * and an Idempotency-Key repeat can find; at thousands of writes a second the default 10,000 is seconds of them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestService, type TestService } from '../support/service.js';
import { waitFor } from '../jobs/fixtures/pipeline.js';

const TOKEN = 'job-retention-test-token';
const auth = { Authorization: `Bearer ${TOKEN}` };
const KEEP_SECONDS = 2;
let service: TestService;

const put = (key: string, body: string, headers: Record<string, string> = {}) =>
  service.app.request(`/v1/stores/mem/objects/${key}`, { method: 'PUT', headers: { ...auth, ...headers }, body });

async function completedJob(response: Response): Promise<string> {
  expect(response.status).toBe(202);
  const { jobId } = (await response.json()) as { jobId: string };
  await waitFor(async () => ((await (await service.app.request(`/v1/jobs/${jobId}`, { headers: auth })).json()) as { state?: string }).state === 'completed', {
    what: `${jobId} completed`,
  });
  return jobId;
}

beforeAll(async () => {
  service = await startTestService('job-retention', {
    API_TOKENS: TOKEN,
    COMPLETED_JOBS_KEEP_COUNT: '3',
    COMPLETED_JOBS_KEEP_SECONDS: String(KEEP_SECONDS),
    FAILED_JOBS_KEEP_COUNT: '7',
  });
});

afterAll(async () => {
  await service?.close();
});

describe('finished jobs kept as configured', () => {
  it('keeps the newest COMPLETED_JOBS_KEEP_COUNT completed jobs: an older one is gone, and its Idempotency-Key makes a new job', async () => {
    const first = await completedJob(await put('doc', 'one', { 'Idempotency-Key': 'first-write' }));
    const later: string[] = [];
    for (let i = 0; i < 3; i++) later.push(await completedJob(await put(`doc-${i}`, `text ${i}`)));

    expect(await service.deps.queues.queue('objects').getCompletedCount()).toBe(3);
    const gone = await service.app.request(`/v1/jobs/${first}`, { headers: auth });
    expect(gone.status).toBe(404);
    expect(((await gone.json()) as { error: { message: string } }).error.message).toContain(`completed ones ${KEEP_SECONDS} s, at most 3`);
    expect((await service.app.request(`/v1/jobs/${later[0]}`, { headers: auth })).status).toBe(200);
    // Past the window, a repeat is a request of its own again (the job id is the same, the job is new).
    const again = await put('doc', 'one', { 'Idempotency-Key': 'first-write' });
    expect(((await again.json()) as { jobId: string }).jobId).toBe(first);
    expect((await service.app.request(`/v1/jobs/${first}`, { headers: auth })).status).toBe(200);
  });

  it('gives the schedules\' jobs the same retention', async () => {
    const scheduled = await service.deps.queues.queue('maintenance').getDelayed();
    expect(scheduled.length).toBeGreaterThan(0);
    for (const job of scheduled) {
      expect(job.opts.removeOnComplete).toEqual({ age: KEEP_SECONDS, count: 3 });
      expect(job.opts.removeOnFail).toEqual({ age: 7 * 24 * 3600, count: 7 });
    }
  });

  it('cleanup removes completed jobs older than COMPLETED_JOBS_KEEP_SECONDS', async () => {
    const objects = service.deps.queues.queue('objects');
    await completedJob(await put('fresh', 'new'));
    expect(await objects.getCompletedCount()).toBeGreaterThan(0);
    await new Promise((resolve) => setTimeout(resolve, (KEEP_SECONDS + 0.5) * 1000));

    const response = await service.app.request('/v1/maintenance/cleanup?wait=true', { method: 'POST', headers: { ...auth, 'Content-Type': 'application/json' }, body: '{}' });
    expect(response.status).toBe(200);
    expect(((await response.json()) as { result: { jobsRemoved: number } }).result.jobsRemoved).toBeGreaterThan(0);
    expect(await objects.getCompletedCount()).toBe(0);
  });
});
