/**
 * A run that loses its job's lock before its commit changes nothing. The scenario: a write's run stalls before the
 * store call, its lock lapses, BullMQ hands the job to another run which completes it, a newer write of the key lands
 * — then the stalled run wakes up. Without the fence it would overwrite the newer content with its older one.
 */
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DiskProvider } from '../../src/providers/disk.js';
import { RamProvider } from '../../src/providers/ram.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { interceptMethod } from '../support/intercept.js';
import { inlineBody, startPipeline, waitFor, type Pipeline } from './fixtures/pipeline.js';

const LOCK_MS = 1_000;

describe('fencing a run that lost its lock', () => {
  let p: Pipeline;
  const ram = new RamProvider({ maxBytes: 1024 * 1024 });
  let stalled: (() => void) | undefined;
  let stallNext = true;
  /** Runs of `write` that reached the store, and those a fence refused. */
  const reached: string[] = [];
  const refused: unknown[] = [];

  beforeAll(async () => {
    // The first write to reach the store stalls: the whole process freezes past the lock's duration, so BullMQ
    // cannot renew the lock and it lapses for real; then the run waits until the test lets it go.
    const store: StorageProvider = interceptMethod(ram, 'write', (write) => async (key, body, opts) => {
      reached.push(key);
      if (stallNext) {
        stallNext = false;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, LOCK_MS * 1.5);
        await new Promise<void>((resolve) => (stalled = resolve));
      }
      return write(key, body, opts).catch((error: unknown) => {
        refused.push(error);
        throw error;
      });
    });
    p = await startPipeline('fencing', { stores: new Map([['main', store]]) });
    await p.startWorkers({ concurrency: 2, lockDurationMs: LOCK_MS, stalledIntervalMs: 300 });
  });

  afterAll(async () => {
    stalled?.();
    await p?.close();
  });

  it('the stalled run is refused at its commit, and the newer write stays', async () => {
    const { jobId: first } = await p.queues.enqueue('write', { store: 'main', key: 'fenced', body: inlineBody('older') });
    await waitFor(() => stalled !== undefined, { what: 'the first run stalled at the store' });
    // Its lock lapsed while the process froze; BullMQ gives the job to another run, which completes it.
    await p.waitForJobState(first, 'completed');
    const { jobId: second } = await p.queues.enqueue('write', { store: 'main', key: 'fenced', body: inlineBody('newer') });
    await p.waitForJobState(second, 'completed');
    expect((await ram.stat('fenced')).etag).toBe(inlineBody('newer').etag);

    // The stalled run wakes up: its fence finds the lock gone, and it writes nothing.
    stalled!();
    await waitFor(() => refused.length > 0, { what: 'the stalled run refused' });
    expect((refused[0] as Error).name).toBe('LockLostError');
    expect((await ram.stat('fenced')).etag).toBe(inlineBody('newer').etag);
    expect(reached).toEqual(['fenced', 'fenced', 'fenced']);
    // One event per job: the abandoned run emitted nothing.
    expect((await p.eventsOf(first, 'object.written')).map((event) => (event.data as { etag: string }).etag)).toEqual([inlineBody('older').etag]);
    expect(await p.eventsOf(second, 'object.written')).toHaveLength(1);
  });

  it('a run that holds its lock past the first lock duration commits after checking it in Redis', async () => {
    let release!: () => void;
    const slow: StorageProvider = interceptMethod(ram, 'write', (write) => async (key, body, opts) => {
      // Longer than the lock lasts unrenewed, without freezing: BullMQ renews the lock, and the run still owns its job.
      await new Promise<void>((resolve) => (release = resolve));
      return write(key, body, opts);
    });
    p.stores.set('slow', slow);
    const { jobId } = await p.queues.enqueue('write', { store: 'slow', key: 'slow', body: inlineBody('slow but still owned') });
    await waitFor(() => release !== undefined, { what: 'the run waiting at the store' });
    await new Promise((resolve) => setTimeout(resolve, LOCK_MS * 1.5));
    release();
    await p.waitForJobState(jobId, 'completed');
    expect((await ram.stat('slow')).etag).toBe(inlineBody('slow but still owned').etag);
  });
});

describe('fencing a run that still holds its lock, with little of it left', () => {
  const LONG_LOCK_MS = 4_000;
  let p: Pipeline;
  const ram = new RamProvider({ maxBytes: 1024 * 1024 });

  beforeAll(async () => {
    // The process freezes for most of the lock at the store call: BullMQ cannot renew it meanwhile, so the run
    // reaches its commit still owning the job, but with less than the fence's margin (a sixth) left.
    const store: StorageProvider = interceptMethod(ram, 'write', (write) => async (key, body, opts) => {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, LONG_LOCK_MS * 0.9);
      return write(key, body, opts);
    });
    p = await startPipeline('fencing-low', { stores: new Map([['main', store]]) });
    await p.startWorkers({ concurrency: 1, lockDurationMs: LONG_LOCK_MS, stalledIntervalMs: LONG_LOCK_MS });
  });

  afterAll(async () => {
    await p?.close();
  });

  it('commits on its first attempt: the fence extends the lock instead of failing the run', async () => {
    const { jobId } = await p.queues.enqueue('write', { store: 'main', key: 'low', body: inlineBody('still mine') });
    await p.waitForJobState(jobId, 'completed');
    expect((await p.queues.getJob(jobId))?.attemptsStarted).toBe(1);
    expect((await ram.stat('low')).etag).toBe(inlineBody('still mine').etag);
  });
});

describe('a run that lost its lock and then fails (session 11)', () => {
  let p: Pipeline | undefined;
  let stalled: (() => void) | undefined;

  afterAll(async () => {
    stalled?.();
    await p?.close();
  });

  it('reports nothing: no job.failed for a job another run completed', async () => {
    const ram = new RamProvider({ maxBytes: 1024 * 1024 });
    const staged = new DiskProvider({ root: await mkdtemp(path.join(os.tmpdir(), 'kyozo-fencing-staging-')), fsync: false });
    let stallNext = false;
    // The staged body's first read freezes the process past the lock, then waits: the run stalls before any commit.
    const staging: StorageProvider = interceptMethod(staged, 'read', (read) => async (key, opts) => {
      if (stallNext) {
        stallNext = false;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, LOCK_MS * 1.5);
        await new Promise<void>((resolve) => (stalled = resolve));
      }
      return read(key, opts);
    });
    p = await startPipeline('fencing-failed', { stores: new Map([['main', ram as StorageProvider]]), stagingProvider: staging, inlineMax: 4 });
    await p.startWorkers({ concurrency: 2, lockDurationMs: LOCK_MS, stalledIntervalMs: 300 });
    const body = await p.staging.stageBody(Readable.from([Buffer.from('older content, staged')]));
    stallNext = true;
    const { jobId: first } = await p.queues.enqueue('write', { store: 'main', key: 'k', body });
    await waitFor(() => stalled !== undefined, { what: 'the first run stalled reading its body' });
    await p.waitForJobState(first, 'completed'); // another run took the job over, wrote it and released the body
    const { jobId: second } = await p.queues.enqueue('write', { store: 'main', key: 'k', body: inlineBody('newer') });
    await p.waitForJobState(second, 'completed');

    // The stalled run wakes: its body is gone and the key holds other content, a NOT_FOUND it must not report.
    stalled!();
    await new Promise((resolve) => setTimeout(resolve, LOCK_MS * 1.5));
    expect(await (await p.queues.getJob(first))?.getState()).toBe('completed');
    expect((await p.eventsOf(first)).map((event) => event.type)).toEqual(['object.written']);
    expect((await ram.stat('k')).etag).toBe(inlineBody('newer').etag);
  });
});
