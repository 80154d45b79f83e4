/**
 * A `restore` job whose first run restored the version but got no answer (the store committed, then timed out) is
 * retried, and the retry finds the version it made — also once retention removed the version it restored from,
 * which the restore itself made older than the newest.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../../src/providers/body.js';
import { ProviderUnavailableError } from '../../src/providers/errors.js';
import { RamProvider } from '../../src/providers/ram.js';
import { interceptMethod } from '../support/intercept.js';
import { startPipeline, waitFor, type Pipeline } from './fixtures/pipeline.js';

const ram = new RamProvider({ maxBytes: 1024 * 1024 });
let restores = 0;
const store = interceptMethod(ram, 'restoreVersion', (restoreVersion) => async (key, versionId, opts) => {
  const info = await restoreVersion(key, versionId, opts);
  if (++restores > 1) return info;
  // Before the retry, retention removes the source: neither the newest version nor the current object's any more.
  await ram.deleteVersion(key, versionId);
  throw new ProviderUnavailableError('restored, but the answer was lost (simulated)');
});
let p: Pipeline;

beforeAll(async () => {
  p = await startPipeline('restore-retry', { stores: new Map([['main', store]]), attempts: 3 });
  await p.startWorkers();
});

afterAll(async () => {
  await p?.close();
});

describe('a retried restore job', () => {
  it('takes the version its first run made for its own after retention removed the source version', async () => {
    const v1 = await ram.createVersion('doc', 'one', { message: 'v1' });
    await ram.createVersion('doc', 'two', { message: 'v2' });
    const { jobId } = await p.queues.enqueue('restore', { store: 'main', key: 'doc', versionId: v1.versionId });
    const state = await waitFor(async () => {
      const current = await (await p.queues.getJob(jobId))?.getState();
      return current === 'completed' || current === 'failed' ? current : undefined;
    });

    expect(state).toBe('completed');
    const current = await ram.stat('doc');
    expect(current.etag).toBe(sha256Hex('one'));
    const [restored] = await p.eventsOf(jobId, 'version.restored');
    expect(restored?.data).toMatchObject({ versionId: current.versionId, restoredFrom: v1.versionId });
    expect(restores).toBe(1); // the retry restored nothing again
    expect((await ram.listVersions('doc')).items).toHaveLength(2); // v2 and the restore's
  });
});
