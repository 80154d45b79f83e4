/**
 * A git store commits the mutations that wait for its lock as one chain: their jobs' events must still leave in the
 * order of the commits, so that the last event of a key describes its current content.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GitProvider } from '../../src/providers/git.js';
import { inlineBody, startPipeline, waitFor, type Pipeline } from './fixtures/pipeline.js';

let p: Pipeline;
let git: GitProvider;
let repoPath: string;

beforeAll(async () => {
  repoPath = await mkdtemp(path.join(os.tmpdir(), 'kyozo-git-events-'));
  git = await GitProvider.open({ repoPath });
  p = await startPipeline('git-event-order', { stores: new Map([['docs', git]]) });
  await p.startWorkers({ concurrency: 8 });
});

afterAll(async () => {
  await p?.close();
  await git?.close();
  await rm(repoPath, { recursive: true, force: true });
});

describe('events of a git store', () => {
  it('leave in commit order: after a burst of writes and versions of one key, the last event names the current content', async () => {
    const wrong: string[] = [];
    for (let round = 0; round < 15; round++) {
      const key = `burst/${round}`;
      const jobs = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          i % 2 === 0
            ? p.queues.enqueue('write', { store: 'docs', key, body: inlineBody(`${round}: write ${i}`) })
            : p.queues.enqueue('version', { store: 'docs', key, body: inlineBody(`${round}: version ${i}`), message: `version ${i}` }),
        ),
      );
      const ids = new Set(jobs.map((job) => job.jobId));
      await waitFor(async () => p.received.filter((event) => ids.has(event.jobId!)).length === jobs.length, { what: `the events of round ${round}` });
      const last = p.received.filter((event) => ids.has(event.jobId!)).at(-1)!;
      const current = await git.stat(key);
      if ((last.data as { etag: string }).etag !== current.etag) wrong.push(key);
    }
    expect(wrong).toEqual([]);
  });
});
