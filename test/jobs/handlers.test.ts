/**
 * Handlers called directly, as a retry or a recovered job would call them: the idempotency rules of each job.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { EventBus } from '../../src/events/bus.js';
import type { JobContext } from '../../src/jobs/definition.js';
import type { JobJournal } from '../../src/jobs/journal.js';
import { restoreJob } from '../../src/jobs/restore.js';
import { createStaging, isStaged, type Staging } from '../../src/jobs/staging.js';
import { versionJob } from '../../src/jobs/version.js';
import { writeJob } from '../../src/jobs/write.js';
import { allVersions } from '../../src/providers/object-info.js';
import { sha256Hex } from '../../src/providers/body.js';
import { DiskProvider } from '../../src/providers/disk.js';
import { ProviderUnavailableError } from '../../src/providers/errors.js';
import { GitProvider } from '../../src/providers/git.js';
import { RamProvider } from '../../src/providers/ram.js';
import { interceptMethod } from '../support/intercept.js';
import { inlineBody, quietLog } from './fixtures/pipeline.js';

describe('job handlers', () => {
  let dir: string;
  let store: RamProvider;
  let stagingProvider: DiskProvider;
  let staging: Staging;
  const enqueuedAt = Date.now();

  const ctx = (attemptsStarted: number): JobContext => ({
    stores: new Map([['main', store]]),
    staging,
    bus: {} as EventBus,
    log: quietLog,
    job: { id: 'objects-test', name: 'test', timestamp: enqueuedAt, attemptsStarted },
  });

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'kyozo-handlers-'));
    store = new RamProvider({ maxBytes: 1024 * 1024 });
    stagingProvider = new DiskProvider({ root: dir, fsync: false });
    staging = createStaging({ provider: stagingProvider, inlineMax: 16 });
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a version job run again after it succeeded leaves one version', async () => {
    const payload = { store: 'main', key: 'doc', body: inlineBody('content'), message: 'save', author: { name: 'Ada' } };
    const first = await versionJob.handle(payload, ctx(1));
    const again = await versionJob.handle(payload, ctx(2));
    expect(again.result).toEqual(first.result);
    expect((await store.listVersions('doc')).items).toHaveLength(1);
  });

  it('a version job picked up again after other jobs versioned the key meanwhile still finds its own (no second)', async () => {
    const payload = { store: 'main', key: 'doc', body: inlineBody('mine'), message: 'mine', author: { name: 'Ada' } };
    const first = await versionJob.handle(payload, ctx(1));
    for (let i = 0; i < 250; i++) await store.createVersion('doc', `other ${i}`, { message: `other ${i}` }); // more than a page
    const again = await versionJob.handle(payload, ctx(2));
    expect(again.result.versionId).toBe(first.result.versionId);
    const versions = await allVersions(store, 'doc');
    expect(versions.filter((version) => version.message === 'mine')).toHaveLength(1);
  });

  it('a retried version job with no author does not take another author\'s identical version for its own', async () => {
    const bobs = await store.createVersion('doc', 'draft', { message: 'save', author: { name: 'Bob', email: 'bob@example.com' } });
    const retried = await versionJob.handle({ store: 'main', key: 'doc', body: inlineBody('draft'), message: 'save' }, ctx(2));
    expect(retried.result.versionId).not.toBe(bobs.versionId);
    expect(retried.result.author).toBeUndefined();
    expect((await store.listVersions('doc')).items).toHaveLength(2);
  });

  it('a retried version job with an author without email does not take a version by another email', async () => {
    const other = await store.createVersion('doc', 'draft', { message: 'save', author: { name: 'Ada', email: 'other@example.com' } });
    const retried = await versionJob.handle({ store: 'main', key: 'doc', body: inlineBody('draft'), message: 'save', author: { name: 'Ada' } }, ctx(2));
    expect(retried.result.versionId).not.toBe(other.versionId);
  });

  it('a version job with no author run again on git finds its version, which carries the store\'s author', async () => {
    const git = await GitProvider.open({ repoPath: path.join(dir, 'repo') });
    try {
      const gitCtx = (attemptsStarted: number): JobContext => ({ ...ctx(attemptsStarted), stores: new Map([['main', git]]) });
      const payload = { store: 'main', key: 'doc', body: inlineBody('content'), message: 'save' };
      const first = await versionJob.handle(payload, gitCtx(1));
      expect(first.result.author).toEqual(git.capabilities.defaultAuthor);
      const again = await versionJob.handle(payload, gitCtx(2));
      expect(again.result.versionId).toBe(first.result.versionId);
      expect((await git.listVersions('doc')).items).toHaveLength(1);
    } finally {
      await git.close();
    }
  });

  it('two first runs with the same content and message are two deliberate versions', async () => {
    const payload = { store: 'main', key: 'doc', body: inlineBody('content'), message: 'save' };
    await versionJob.handle(payload, ctx(1));
    await versionJob.handle(payload, ctx(1));
    expect((await store.listVersions('doc')).items).toHaveLength(2);
  });

  it('a retried version job whose staged body is gone finds the version it made', async () => {
    const body = await staging.stageBody('a body longer than sixteen bytes');
    const payload = { store: 'main', key: 'doc', body, message: 'staged' };
    const first = await versionJob.handle(payload, ctx(1));
    await expect(stagingProvider.stat((body as { stagedKey: string }).stagedKey)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    const again = await versionJob.handle(payload, ctx(2));
    expect(again.result.versionId).toBe(first.result.versionId);
    expect((await store.listVersions('doc')).items).toHaveLength(1);
  });

  it('a retried restore job leaves one new version', async () => {
    const v1 = await store.createVersion('doc', 'one', { message: 'v1' });
    await store.createVersion('doc', 'two', { message: 'v2' });
    const payload = { store: 'main', key: 'doc', versionId: v1.versionId };
    const first = await restoreJob.handle(payload, ctx(1));
    const again = await restoreJob.handle(payload, ctx(2));
    expect(again.result.versionId).toBe(first.result.versionId);
    expect((await store.listVersions('doc')).items).toHaveLength(3);
    expect((await store.stat('doc')).etag).toBe(sha256Hex('one'));
  });

  it('a retried write with ifMatch succeeds when the first run already wrote it', async () => {
    const v1 = await store.write('doc', 'v1');
    const payload = { store: 'main', key: 'doc', body: inlineBody('v2'), ifMatch: v1.etag };
    await writeJob.handle(payload, ctx(1));
    const again = await writeJob.handle(payload, ctx(2));
    expect(again.result.etag).toBe(sha256Hex('v2'));
  });

  it('a first-run write with a stale ifMatch fails even if the content is already there', async () => {
    await store.write('doc', 'v2');
    const payload = { store: 'main', key: 'doc', body: inlineBody('v2'), ifMatch: sha256Hex('v1') };
    await expect(writeJob.handle(payload, ctx(1))).rejects.toMatchObject({ code: 'PRECONDITION_FAILED' });
  });

  it('a write whose staged body is gone succeeds only if the target already holds that body', async () => {
    const body = await staging.stageBody('a staged body of some length');
    const payload = { store: 'main', key: 'doc', body };
    await writeJob.handle(payload, ctx(1));
    expect((await writeJob.handle(payload, ctx(2))).result.etag).toBe(body.etag);

    await store.write('doc', 'someone else wrote this later');
    await expect(writeJob.handle(payload, ctx(3))).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('a write releases its staged body after success', async () => {
    const body = await staging.stageBody('another staged body, long enough');
    if (!isStaged(body)) throw new Error('expected a staged body');
    await writeJob.handle({ store: 'main', key: 'doc', body }, ctx(1));
    expect((await stagingProvider.list({ prefix: 'staging/' })).items).toHaveLength(0);
    expect((await store.stat('doc')).etag).toBe(body.etag);
  });

  /** A journal whose first run's worker dies right after noting its result, before the body is released. */
  function dyingJournal(): JobJournal & { kept: unknown } {
    const journal = {
      kept: undefined as unknown,
      remember: async (result: unknown) => {
        const first = journal.kept === undefined;
        journal.kept = result;
        if (first) throw new Error('worker killed');
      },
      recall: async () => journal.kept,
      noteOnce: async () => undefined,
      noted: async () => undefined,
    };
    return journal;
  }

  /** A journal that keeps what runs note, as the job's hash does. */
  function memoryJournal(): JobJournal {
    const notes = new Map<string, string>();
    let result: unknown;
    return {
      remember: async (value) => void (result = value),
      recall: async () => result,
      noteOnce: async (name, value) => {
        if (!notes.has(name)) notes.set(name, value);
        return notes.get(name);
      },
      noted: async (name) => notes.get(name),
    };
  }

  it('a retried version job does not take an identical version made before its first run for its own (session 11)', async () => {
    // A revert to A within the slack: A "release", then B "wip", then the job's A "release" whose first run failed.
    await store.createVersion('doc', 'A', { message: 'release' });
    await store.createVersion('doc', 'B', { message: 'wip' });
    const journal = memoryJournal();
    const payload = { store: 'main', key: 'doc', body: inlineBody('A'), message: 'release' };
    const job = (attemptsStarted: number) => ({ ...ctx(attemptsStarted), job: { ...ctx(attemptsStarted).job, timestamp: Date.now() }, journal });
    const failing = interceptMethod(store, 'createVersion', () => async () => Promise.reject(new ProviderUnavailableError('cold is down')));
    await expect(versionJob.handle(payload, { ...job(1), stores: new Map([['main', failing]]) })).rejects.toBeInstanceOf(ProviderUnavailableError);
    const retried = await versionJob.handle(payload, job(2));
    expect((await store.listVersions('doc')).items.map((version) => version.message)).toEqual(['release', 'wip', 'release']);
    expect(retried.result.versionId).toBe((await store.listVersions('doc')).items[0]!.versionId);
    expect((await store.stat('doc')).etag).toBe(inlineBody('A').etag);
  });

  it('a retry whose first run noted nothing (it ran an older release) finds the version that run made (session 11)', async () => {
    const journal = memoryJournal();
    const payload = { store: 'main', key: 'doc', body: inlineBody('mine'), message: 'mine' };
    const first = await versionJob.handle(payload, ctx(1)); // no journal: nothing noted
    const again = await versionJob.handle(payload, { ...ctx(2), journal });
    expect(again.result.versionId).toBe(first.result.versionId);
    expect((await store.listVersions('doc')).items).toHaveLength(1);
  });

  it('a retried version job finds its own version however far the producer\'s clock is ahead, with others made after it', async () => {
    await store.createVersion('doc', 'older', { message: 'older' });
    const journal = memoryJournal();
    const payload = { store: 'main', key: 'doc', body: inlineBody('mine'), message: 'mine' };
    // Enqueued by a producer whose clock runs 1.5 s ahead: the version this job makes is dated before its timestamp.
    const job = (attemptsStarted: number) => ({ ...ctx(attemptsStarted), job: { ...ctx(attemptsStarted).job, timestamp: Date.now() + 1_500 }, journal });
    const first = await versionJob.handle(payload, job(1));
    await store.createVersion('doc', 'another job', { message: 'other' });
    const again = await versionJob.handle(payload, job(2));
    expect(again.result.versionId).toBe(first.result.versionId);
    expect((await store.listVersions('doc')).items.map((version) => version.message)).toEqual(['other', 'mine', 'older']);
  });

  it('a staged write that died after noting its result, before releasing its body, is not done again over a newer write', async () => {
    const journal = dyingJournal();
    const body = await staging.stageBody('content longer than sixteen bytes');
    await expect(writeJob.handle({ store: 'main', key: 'doc', body }, { ...ctx(1), journal })).rejects.toThrow('worker killed');
    await store.write('doc', 'a newer write');

    const again = await writeJob.handle({ store: 'main', key: 'doc', body }, { ...ctx(2), journal });
    expect(again.result).toEqual(journal.kept);
    expect((await store.stat('doc')).etag).toBe(sha256Hex('a newer write'));
    expect((await stagingProvider.list({ prefix: 'staging/' })).items).toHaveLength(0);
  });

  it('a staged version that died after noting its result answers with it, not with an identical version made since', async () => {
    const journal = dyingJournal();
    const content = 'content longer than sixteen bytes';
    const body = await staging.stageBody(content);
    const payload = { store: 'main', key: 'doc', body, message: 'nightly', author: { name: 'Ada' } };
    await expect(versionJob.handle(payload, { ...ctx(1), journal })).rejects.toThrow('worker killed');
    const another = await store.createVersion('doc', content, { message: 'nightly', author: { name: 'Ada' } });

    const again = await versionJob.handle(payload, { ...ctx(2), journal });
    expect(again.result).toEqual(journal.kept);
    expect(again.result.versionId).not.toBe(another.versionId);
    expect((await store.listVersions('doc')).items).toHaveLength(2);
  });

  it('a staged write or version whose body the staging store cannot remove still completes (cleanup removes it later)', async () => {
    const stuck: Staging = { ...staging, release: () => Promise.reject(new Error('staging store unavailable')) };
    const written = await staging.stageBody('a staged body for a write, long enough');
    expect((await writeJob.handle({ store: 'main', key: 'doc', body: written }, { ...ctx(1), staging: stuck })).result.etag).toBe(written.etag);
    const versioned = await staging.stageBody('a staged body for a version, long enough');
    const version = await versionJob.handle({ store: 'main', key: 'doc', body: versioned, message: 'save' }, { ...ctx(1), staging: stuck });
    expect(version.result.etag).toBe(versioned.etag);
    expect((await store.stat('doc')).etag).toBe(versioned.etag);
  });
});
