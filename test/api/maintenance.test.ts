/**
 * `POST /v1/maintenance/...` through the whole service (real Redis, real worker): jobs, waiting, progress, and the
 * answers to bodies that are not JSON, too large, or name stores that do not exist.
 */
import { queueOfJobId } from '../../src/jobs/job-id.js';
import { isStaged } from '../../src/jobs/staging.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../../src/providers/body.js';
import { newVersionId } from '../../src/providers/version-id.js';
import { startTestService, type TestService } from '../support/service.js';
import { waitFor } from '../jobs/fixtures/pipeline.js';

const TOKEN = 'maintenance-test-token';
const auth = { Authorization: `Bearer ${TOKEN}` };
let service: TestService;

const post = (task: string, body: unknown, query = '', headers: Record<string, string> = {}) =>
  service.app.request(`/v1/maintenance/${task}${query}`, {
    method: 'POST',
    headers: { ...auth, 'Content-Type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });

const errorOf = async (response: Response) => ((await response.json()) as { error: { code: string; message: string } }).error;

interface Finished {
  jobId: string;
  state: string;
  result: Record<string, unknown>;
}

beforeAll(async () => {
  service = await startTestService('api-maintenance', { API_TOKENS: TOKEN, STORES: 'files:disk,mem:ram,vault:disk', BACKUP_STORE: 'vault' });
  const files = service.deps.stores.get('files')!;
  for (let i = 0; i < 20; i++) await files.write(`doc/${i}`, `content ${i}`, { contentType: 'text/plain' });
});

afterAll(async () => {
  await service?.close();
});

describe('POST /v1/maintenance', () => {
  it('backup answers 202 with a job whose status shows its progress and result', async () => {
    const response = await post('backup', { store: 'files' });
    expect(response.status).toBe(202);
    const { jobId, statusUrl } = (await response.json()) as { jobId: string; statusUrl: string };
    expect(statusUrl).toBe(`/v1/jobs/${jobId}`);
    const status = await waitFor(
      async () => {
        const body = (await (await service.app.request(statusUrl, { headers: auth })).json()) as { state: string; progress: unknown; result?: unknown };
        return body.state === 'completed' ? body : undefined;
      },
      { what: 'backup job completed' },
    );
    expect(status.progress).toMatchObject({ phase: 'prune', objects: 20 });
    expect(status.result).toMatchObject({ store: 'files', target: 'vault', objects: 20, copied: 20, verified: true });
  });

  it('?wait=true answers 200 with the job id, its state and its result; restore-backup restores what backup saved', async () => {
    const backup = await post('backup', { store: 'files' }, '?wait=true');
    expect(backup.status).toBe(200);
    const saved = (await backup.json()) as Finished;
    expect(saved).toMatchObject({ state: 'completed', result: { objects: 20, copied: 0, skipped: 20 } });
    expect(saved.jobId).toMatch(/^maintenance-/);

    const restore = await post('restore-backup', { manifest: saved.result.manifest, store: 'mem' }, '?wait=true');
    expect(restore.status).toBe(200);
    expect(((await restore.json()) as Finished).result).toMatchObject({ restored: 20, verified: true });
    expect((await service.deps.stores.get('mem')!.stat('doc/7')).etag).toBe(sha256Hex('content 7'));
  });

  it('a job made by a schedule is found by the id its events carry', async () => {
    const queue = service.deps.queues.queue('maintenance');
    await queue.upsertJobScheduler('test-yearly-cleanup', { pattern: '0 0 1 1 *' }, { name: 'cleanup', data: {} });
    try {
      const [scheduled] = await queue.getJobs(['delayed']);
      expect(scheduled?.id).toMatch(/^repeat:test-yearly-cleanup:/);
      const response = await service.app.request(`/v1/jobs/${encodeURIComponent(scheduled!.id!)}`, { headers: auth });
      expect(response.status).toBe(200);
      expect(await response.json()).toMatchObject({ id: scheduled!.id, name: 'cleanup', state: 'delayed' });
      // The scheduled backup of a store with a name of the longest kind (63 characters) is found too.
      expect(queueOfJobId(`repeat:backup-${'s'.repeat(63)}:1700000000000`)).toBe('maintenance');
      // Names that reach other keys of the queue are no jobs: the scheduler's own hash, a job's lock.
      for (const id of ['repeat:test-yearly-cleanup', `${scheduled!.id}:lock`, 'objects-x:lock', 'maintenance-a:b']) {
        const other = await service.app.request(`/v1/jobs/${encodeURIComponent(id)}`, { headers: auth });
        expect(other.status, id).toBe(404);
      }
    } finally {
      await queue.removeJobScheduler('test-yearly-cleanup');
    }
  });

  it('migrate, cleanup and tier run as jobs of their own', async () => {
    const migrate = await post('migrate', { from: 'files', to: 'mem' }, '?wait=true');
    expect(migrate.status).toBe(200);
    expect(((await migrate.json()) as Finished).result).toMatchObject({ from: 'files', to: 'mem', objects: 20, verified: true });

    const cleanup = await post('cleanup', '', '?wait=true');
    expect(cleanup.status).toBe(200);
    expect(((await cleanup.json()) as Finished).result).toMatchObject({ skipped: 0, stores: { files: { keys: 20 } } });

    const tier = await post('tier', {}, '?wait=true');
    expect(tier.status).toBe(200);
    expect(((await tier.json()) as Finished).result).toMatchObject({ stores: {}, promoted: 0 });
  });

  it('a job that cannot run answers with its error when waited for (a manifest that is not one: 400)', async () => {
    const manifest = `backups/files/manifests/${newVersionId()}.json`;
    await service.deps.stores.get('vault')!.write(manifest, 'not a manifest');
    const response = await post('restore-backup', { manifest, store: 'mem' }, '?wait=true');
    expect(response.status).toBe(400);
    expect((await errorOf(response)).code).toBe('INVALID_ARGUMENT');
  });

  it('answers 400 to a body the job could never run, before a job is enqueued', async () => {
    const manifest = `backups/files/manifests/${newVersionId()}.json`;
    const jobs = () => service.deps.queues.queue('maintenance').getJobCountByTypes('waiting', 'active', 'delayed', 'completed', 'failed');
    const before = await jobs();
    for (const [task, body] of [
      ['backup', { store: 'vault' }],
      ['backup', { store: 'files', target: 'files' }],
      ['migrate', { from: 'files', to: 'files' }],
      ['restore-backup', { manifest, store: 'vault' }],
      ['restore-backup', { manifest, store: 'files', from: 'files' }],
      ['tier', { store: 'files' }],
    ] as const) {
      const response = await post(task, body);
      expect(response.status, `${task} ${JSON.stringify(body)}`).toBe(400);
      expect((await errorOf(response)).code).toBe('INVALID_ARGUMENT');
    }
    expect(await jobs()).toBe(before);
  });

  it('answers 404 to restore-backup of a manifest the backup store does not hold', async () => {
    const response = await post('restore-backup', { manifest: `backups/files/manifests/${newVersionId()}.json`, store: 'mem' });
    expect(response.status).toBe(404);
    expect((await errorOf(response)).code).toBe('NOT_FOUND');
  });

  it('the same Idempotency-Key makes one job', async () => {
    const first = (await (await post('cleanup', {}, '', { 'Idempotency-Key': 'nightly-1' })).json()) as { jobId: string };
    const again = (await (await post('cleanup', {}, '', { 'Idempotency-Key': 'nightly-1' })).json()) as { jobId: string };
    expect(again.jobId).toBe(first.jobId);
  });

  it('answers 400 BAD_REQUEST to a body that is not JSON, or not a JSON object', async () => {
    const malformed = await post('backup', '{"store": "files"');
    expect(malformed.status).toBe(400);
    const error = await errorOf(malformed);
    expect(error.code).toBe('BAD_REQUEST');
    expect(error.message).toMatch(/not valid JSON/);
    const list = await post('migrate', ['files', 'mem']);
    expect(list.status).toBe(400);
    expect((await errorOf(list)).message).toMatch(/JSON object/);
  });

  it('answers 400 to fields the job does not take, or without the ones it needs', async () => {
    const unknown = await post('migrate', { from: 'files', to: 'mem', fast: true });
    expect(unknown.status).toBe(400);
    expect((await errorOf(unknown)).code).toBe('INVALID_ARGUMENT');
    const missing = await post('restore-backup', { store: 'mem' });
    expect(missing.status).toBe(400);
    expect((await errorOf(missing)).message).toMatch(/manifest/);
  });

  it('answers 400 to a stray "body" field of any task, and leaves the staged body it names alone (session 10)', async () => {
    // A body staged for an upload whose job is yet to be added (the API stages before it enqueues).
    const staged = await service.deps.staging.stageBody(Buffer.alloc(300 * 1024, 'x'));
    if (!isStaged(staged)) throw new Error('expected a staged body');
    for (const task of ['cleanup', 'tier', 'backup', 'migrate', 'restore-backup']) {
      for (const body of [1, null, 'x', staged]) {
        const response = await post(task, { body });
        expect(response.status, `${task} ${JSON.stringify(body)}`).toBe(400);
      }
    }
    expect((await service.stagingProvider.stat(staged.stagedKey)).size).toBe(300 * 1024);
  });

  it('answers 404 when a store named in the body does not exist', async () => {
    for (const [task, body] of [
      ['backup', { store: 'nope' }],
      ['backup', { store: 'files', target: 'nope' }],
      ['migrate', { from: 'files', to: 'nope' }],
      ['cleanup', { store: 'nope' }],
    ] as const) {
      const response = await post(task, body);
      expect(response.status, `${task} ${JSON.stringify(body)}`).toBe(404);
      expect((await errorOf(response)).code).toBe('NOT_FOUND');
    }
  });

  it('answers 413 to a body over 64 KiB', async () => {
    const response = await post('backup', { store: 'files', padding: 'x'.repeat(70 * 1024) });
    expect(response.status).toBe(413);
  });
});
