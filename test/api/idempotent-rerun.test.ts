/**
 * A request repeated with its Idempotency-Key after its job failed for a reason a retry can mend (503 with
 * Retry-After: the store was down past the parking window) runs that job again; one that failed for good (412) answers
 * the same failure again without running anything.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProviderUnavailableError } from '../../src/providers/errors.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { startTestService, type TestService } from '../support/service.js';

let service: TestService;
let outage = false;
let writes = 0;

beforeAll(async () => {
  service = await startTestService('api-idempotent-rerun', { JOB_ATTEMPTS: '1', UNAVAILABLE_RETRY_SECONDS: '0' });
  // The worker and the web share the store objects: the outage is switched on the one they both hold.
  const mem = service.deps.stores.get('mem') as StorageProvider;
  const write = mem.write.bind(mem);
  mem.write = async (...args) => {
    writes++;
    if (outage) throw new ProviderUnavailableError('the store is down (simulated)');
    return write(...args);
  };
});
afterAll(async () => {
  await service?.close();
});

const put = (key: string, idempotencyKey: string, headers: Record<string, string> = {}) =>
  service.app.request(`/v1/stores/mem/objects/${key}?wait=true`, { method: 'PUT', body: 'hello', headers: { 'Idempotency-Key': idempotencyKey, ...headers } });

describe('Idempotency-Key after a failed job', () => {
  it('a repeat after a 503 runs the same job again, and it writes once the store is back', async () => {
    outage = true;
    const first = await put('rerun/doc', 'order-42');
    expect(first.status).toBe(503);
    expect(first.headers.get('retry-after')).toBe('5');
    outage = false;

    const again = await put('rerun/doc', 'order-42');
    expect(again.status, await again.clone().text()).toBe(200);
    const failed = (await first.json()) as { error: { message: string } };
    const jobId = /job (\S+) failed/.exec(failed.error.message)?.[1];
    const job = (await service.deps.queues.getJob(jobId!))!;
    expect(await job.getState()).toBe('completed'); // the same job, run again, not a second one
    expect((await service.app.request('/v1/stores/mem/objects/rerun/doc')).status).toBe(200);
  });

  it('a repeat after a failure no retry can mend answers it again and runs nothing', async () => {
    const created = await put('rerun/guarded', 'create-1', { 'If-None-Match': '*' });
    expect(created.status).toBe(200);
    const refused = await put('rerun/guarded', 'create-2', { 'If-None-Match': '*' });
    expect(refused.status).toBe(412);
    const before = writes;
    const repeated = await put('rerun/guarded', 'create-2', { 'If-None-Match': '*' });
    expect(repeated.status).toBe(412);
    expect(writes).toBe(before);
  });
});
