/**
 * `delete-prefix` (`src/jobs/delete-prefix.ts`): every object under a prefix, page by page, resumable; through the
 * API and a real worker, and its handler called directly for the runs a shutdown splits.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deletePrefixJob, type DeletePrefixResult } from '../../src/jobs/delete-prefix.js';
import { JobInterruptedError } from '../../src/jobs/definition.js';
import type { EventEnvelope } from '../../src/events/bus.js';
import { RamProvider } from '../../src/providers/ram.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { startTestService, type TestService } from '../support/service.js';
import { interceptMethod } from '../support/intercept.js';
import { fill, maintenanceFixture, type MaintenanceFixture } from './fixtures/maintenance.js';
import { startPipeline, waitFor, type Pipeline } from './fixtures/pipeline.js';

const TOKEN = 'delete-prefix-token-0123456789ab';
const bearer = { Authorization: `Bearer ${TOKEN}` };

let service: TestService;
let f: MaintenanceFixture;
const request = (path: string, init?: RequestInit) => service.app.request(path, init);
const keysOf = async (provider: StorageProvider, prefix?: string) => (await provider.list({ prefix })).items.map((item) => item.key);

beforeAll(async () => {
  [service, f] = await Promise.all([startTestService('delete-prefix', { API_TOKENS: TOKEN }), maintenanceFixture('delete-prefix')]);
});
afterAll(async () => {
  await Promise.all([service?.close(), f?.close()]);
});

describe('DELETE /v1/stores/:store/objects?prefix=', () => {
  it.each(['files', 'mem'])('deletes every object under the prefix of a %s store, nothing else, with one event', async (store) => {
    const provider = service.deps.stores.get(store)!;
    for (const key of ['trash/a', 'trash/b/c', 'trash/b/d', 'trash/é', 'trashcan', 'keep/trash/x']) await provider.write(key, key);
    const events: EventEnvelope[] = [];
    const unsubscribe = await service.deps.bus.subscribe(['objects.deleted'], (event) => void events.push(event));
    try {
      const response = await request(`/v1/stores/${store}/objects?prefix=trash/&wait=true`, { method: 'DELETE', headers: bearer });
      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({ prefix: 'trash/', deleted: 4, allVersions: false });
      expect(await keysOf(provider)).toEqual(['keep/trash/x', 'trashcan']);
      await expect.poll(() => events.length).toBe(1);
      expect(events[0]).toMatchObject({ type: 'objects.deleted', store, data: { prefix: 'trash/', deleted: 4 } });
      // Nothing left under it: a second one deletes nothing, and succeeds.
      const again = await request(`/v1/stores/${store}/objects/?prefix=trash/&wait=true`, { method: 'DELETE', headers: bearer });
      expect(await again.json()).toMatchObject({ deleted: 0 });
    } finally {
      await unsubscribe();
    }
  });

  it('with allVersions the versions go too; without, they stay', async () => {
    const provider = service.deps.stores.get('files')!;
    await provider.createVersion('old/doc', 'v1', { message: 'one' });
    await provider.createVersion('old/doc', 'v2', { message: 'two' });
    await provider.createVersion('kept/doc', 'v1', { message: 'one' });
    await request('/v1/stores/files/objects?prefix=kept/&wait=true', { method: 'DELETE', headers: bearer });
    expect((await provider.listVersions('kept/doc')).items).toHaveLength(1);
    const response = await request('/v1/stores/files/objects?prefix=old/&allVersions=true&wait=true', { method: 'DELETE', headers: bearer });
    expect(await response.json()).toEqual({ prefix: 'old/', deleted: 1, allVersions: true });
    expect((await provider.listVersions('old/doc')).items).toEqual([]);
  });

  it('refuses a prefix that is no prefix, and an unknown store, before enqueueing', async () => {
    for (const prefix of ['a/../b/', '%00x']) {
      const response = await request(`/v1/stores/files/objects?prefix=${prefix}`, { method: 'DELETE', headers: bearer });
      expect(response.status, prefix).toBe(400);
    }
    expect((await request('/v1/stores/nope/objects?prefix=a/', { method: 'DELETE', headers: bearer })).status).toBe(404);
    expect((await request('/v1/stores/files/objects?prefix=a/', { method: 'DELETE', headers: { ...bearer, 'If-Match': '*' } })).status).toBe(501);
  });

  it('refuses a repeated ?prefix or ?allVersions rather than act on one of them, and deletes nothing', async () => {
    const provider = service.deps.stores.get('mem')!;
    await provider.write('twice/a', 'a');
    for (const query of ['prefix=twice/&prefix=other/', 'prefix=twice/&allVersions=false&allVersions=true']) {
      const response = await request(`/v1/stores/mem/objects?${query}&wait=true`, { method: 'DELETE', headers: bearer });
      expect(response.status, query).toBe(400);
      expect(((await response.json()) as { error: { message: string } }).error.message).toMatch(/given 2 times/);
    }
    expect(await keysOf(provider, 'twice/')).toEqual(['twice/a']);
  });

  it('an Idempotency-Key repeat is the same job', async () => {
    const headers = { ...bearer, 'Idempotency-Key': 'delete-prefix-once' };
    const first = (await (await request('/v1/stores/mem/objects?prefix=x/', { method: 'DELETE', headers })).json()) as { jobId: string };
    const second = (await (await request('/v1/stores/mem/objects?prefix=x/', { method: 'DELETE', headers })).json()) as { jobId: string };
    expect(second.jobId).toBe(first.jobId);
  });
});

describe('the job', () => {
  it('saves its place after each page; a run stopped by a shutdown is resumed from there, and counts every key once', async () => {
    const ram = new RamProvider({ maxBytes: 8 * 1024 * 1024 });
    await fill(ram, 450, 'big/', (i) => `object ${i}`);
    await ram.write('bigger', 'stays');
    const stores = new Map<string, StorageProvider>([['ram', ram]]);
    const stop = new AbortController();
    const first = f.context(stores, { name: 'delete-prefix', signal: stop.signal });
    // The shutdown comes while the first page is deleted: the run stops before listing the second.
    const reporting = first.reportProgress!;
    first.reportProgress = async (progress) => {
      stop.abort();
      await reporting(progress);
    };
    await expect(deletePrefixJob.handle({ store: 'ram', prefix: 'big/' }, first)).rejects.toBeInstanceOf(JobInterruptedError);
    expect(first.progressLog).toEqual([{ cursor: expect.any(String), deleted: 200 }]);
    expect(await keysOf(ram, 'big/')).toHaveLength(250);

    const listed: (string | undefined)[] = [];
    const counted = new Proxy(ram, {
      get: (target, property, receiver) =>
        property === 'list' ? (opts: { cursor?: string }) => (listed.push(opts.cursor), target.list(opts)) : Reflect.get(target, property, receiver),
    });
    const resumed = f.context(new Map<string, StorageProvider>([['ram', counted]]), { name: 'delete-prefix', progress: first.progressLog[0] });
    const { result, event } = await deletePrefixJob.handle({ store: 'ram', prefix: 'big/' }, resumed);
    expect(result).toEqual<DeletePrefixResult>({ prefix: 'big/', deleted: 450, allVersions: false });
    expect(event).toMatchObject({ type: 'objects.deleted', store: 'ram', data: result });
    expect(listed[0]).toBe(first.progressLog[0]!.cursor); // from its place, not from the start
    expect(await keysOf(ram)).toEqual(['bigger']);
  });

  it('a store that fails mid-page fails the run; the retry goes on from the last saved place', async () => {
    const ram = new RamProvider({ maxBytes: 8 * 1024 * 1024 });
    await fill(ram, 300, 'flaky/', (i) => `object ${i}`);
    let deletes = 0;
    const failing = new Proxy(ram, {
      get: (target, property, receiver) =>
        property === 'delete'
          ? async (key: string, opts?: object) => {
              if (++deletes === 250) throw new Error('disk went away');
              return target.delete(key, opts);
            }
          : Reflect.get(target, property, receiver),
    });
    const first = f.context(new Map<string, StorageProvider>([['ram', failing]]), { name: 'delete-prefix' });
    await expect(deletePrefixJob.handle({ store: 'ram', prefix: 'flaky/' }, first)).rejects.toThrow('disk went away');
    expect(first.progressLog).toEqual([{ cursor: expect.any(String), deleted: 200 }]);
    await new Promise((resolve) => setTimeout(resolve, 50)); // the deletes under way when it failed
    // It stopped taking keys at the failure: at most the 7 other deletes under way went on.
    const left = (await keysOf(ram)).length;
    expect(deletes).toBeLessThanOrEqual(250 + 7);
    expect(left).toBe(300 - (deletes - 1));
    const retry = f.context(new Map<string, StorageProvider>([['ram', ram]]), { name: 'delete-prefix', progress: first.progressLog.at(-1) });
    const { result } = await deletePrefixJob.handle({ store: 'ram', prefix: 'flaky/' }, retry);
    // The keys the failed run deleted after its last saved place are not counted again: the retry counts what it found.
    expect(result.deleted).toBe(200 + left);
    expect(await keysOf(ram)).toEqual([]);
  });
});

describe('in a worker', () => {
  let p: Pipeline;
  beforeAll(async () => {
    p = await startPipeline('delete-prefix-worker', { stores: new Map() });
  });
  afterAll(async () => {
    await p?.close();
  });

  it('a graceful shutdown stops the job between pages without using an attempt; the next worker finishes it', async () => {
    const ram = new RamProvider({ maxBytes: 8 * 1024 * 1024 });
    await fill(ram, 600, 'slow/', (i) => `object ${i}`);
    // 5 ms a delete, 8 at a time: a page of 200 takes ~125 ms, long enough to shut down in the middle of the job.
    p.stores.set('slow', interceptMethod(ram, 'delete', (remove) => async (key, opts) => {
      await new Promise((resolve) => setTimeout(resolve, 5));
      return remove(key, opts);
    }));
    const { jobId } = await p.queues.enqueue('delete-prefix', { store: 'slow', prefix: 'slow/' });
    const first = await p.startWorkers({ queues: ['objects'] });
    const progressOf = async () => ((await p.queues.getJob(jobId))?.progress ?? {}) as { deleted?: number };
    await waitFor(async () => ((await progressOf()).deleted ?? 0) >= 200, { what: 'the first page' });
    expect(await first.close(10_000)).toEqual({ timedOut: false });
    const stopped = (await p.queues.getJob(jobId))!;
    expect(['delayed', 'waiting']).toContain(await stopped.getState());
    expect(stopped.attemptsMade).toBe(0);
    expect((await keysOf(ram, 'slow/')).length).toBeGreaterThan(0);

    const second = await p.startWorkers({ queues: ['objects'] });
    await p.waitForJobState(jobId, 'completed');
    await second.close();
    expect((await p.queues.getJob(jobId))!.returnvalue).toEqual<DeletePrefixResult>({ prefix: 'slow/', deleted: 600, allVersions: false });
    expect(await keysOf(ram)).toEqual([]);
    expect(await p.eventsOf(jobId, 'objects.deleted')).toHaveLength(1);
  });
});
