/**
 * A `restore` job without a message, on an s3 store whose version's metadata leaves no room for the default
 * `restore <id>` beside S3's 2 KB: the store records the restore without one, and a retry of the job takes that
 * version for its own (its first run restored, then lost the answer). The job used to pass the default as its own
 * message, which the store refused.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProviderUnavailableError } from '../../src/providers/errors.js';
import { createS3Provider, type S3Provider } from '../../src/providers/s3.js';
import { interceptMethod } from '../support/intercept.js';
import { s3ProviderOptions, sharedS3 } from '../support/s3.js';
import { startPipeline, waitFor, type Pipeline } from './fixtures/pipeline.js';

let s3: S3Provider;
let restores = 0;
let p: Pipeline;

beforeAll(async () => {
  const endpoint = await sharedS3();
  s3 = await createS3Provider(s3ProviderOptions(endpoint, await endpoint.createBucket(), { versioning: 'explicit' }));
  const store = interceptMethod(s3, 'restoreVersion', (restoreVersion) => async (key, versionId, opts) => {
    const info = await restoreVersion(key, versionId, opts);
    if (++restores === 1) throw new ProviderUnavailableError('restored, but the answer was lost (simulated)');
    return info;
  });
  p = await startPipeline('restore-s3-budget', { stores: new Map([['main', store]]), attempts: 3 });
  await p.startWorkers();
});

afterAll(async () => {
  await p?.close();
  await s3?.close();
});

describe('a restore job without a message on an s3 store near its metadata budget', () => {
  it('restores without the default message, and its retry takes that version for its own', async () => {
    const note = 'n'.repeat(1860); // with the version's id and hash, a few bytes short of S3's 2 KB
    const made = await s3.createVersion('k', 'old', { message: 'm', metadata: { note } });
    await s3.write('k', 'new');
    const { jobId } = await p.queues.enqueue('restore', { store: 'main', key: 'k', versionId: made.versionId });
    const state = await waitFor(async () => {
      const current = await (await p.queues.getJob(jobId))?.getState();
      return current === 'completed' || current === 'failed' ? current : undefined;
    });

    expect(state, (await p.queues.getJob(jobId))?.failedReason).toBe('completed');
    expect(restores).toBe(1); // the retry restored nothing again
    const [restored] = await p.eventsOf(jobId, 'version.restored');
    const current = await s3.stat('k');
    expect(restored?.data).toMatchObject({ versionId: current.versionId, restoredFrom: made.versionId });
    expect((restored?.data as { message?: string }).message).toBeUndefined();
    expect(current.metadata).toEqual({ note });
    expect((await s3.listVersions('k')).items.map((version) => version.message)).toEqual([undefined, 'm']);
  });
});
