/**
 * `job.failed` is told once per failed run: a worker that emitted it and died before BullMQ marked the job failed
 * leaves a job that runs again; that run's failure is the same one and is not told twice.
 */
import { Job } from 'bullmq';
import { afterAll, describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../../src/providers/errors.js';
import { RamProvider } from '../../src/providers/ram.js';
import { interceptMethod } from '../support/intercept.js';
import { inlineBody, startPipeline, type Pipeline } from './fixtures/pipeline.js';

const refusing = interceptMethod(new RamProvider({ maxBytes: 1 << 20 }), 'write', () => async () => {
  throw new InvalidArgumentError('refused (simulated)');
});
const moveToFailed = Job.prototype.moveToFailed;
let p: Pipeline | undefined;

afterAll(async () => {
  Job.prototype.moveToFailed = moveToFailed;
  await p?.close();
});

describe('job.failed after a crash', () => {
  it('a run that failed again after its worker died before marking the failure tells it once', async () => {
    let calls = 0;
    // The first run's worker "dies" between its job.failed and BullMQ's moveToFailed: the job stalls and runs again.
    Job.prototype.moveToFailed = async function (this: Job, ...args: Parameters<Job['moveToFailed']>) {
      if (calls++ === 0) {
        await new Promise((resolve) => setTimeout(resolve, 3_000));
        throw new Error('the worker died before marking the job failed');
      }
      return moveToFailed.apply(this, args);
    };
    p = await startPipeline('failed-once', { stores: new Map([['main', refusing]]), attempts: 1 });
    await p.startWorkers({ lockDurationMs: 1_000, stalledIntervalMs: 300 });
    const { jobId } = await p.queues.enqueue('write', { store: 'main', key: 'doc', body: inlineBody('hello') });
    await p.waitForJobState(jobId, 'failed');
    await new Promise((resolve) => setTimeout(resolve, 300));

    expect((await p.queues.getJob(jobId))!.attemptsStarted).toBe(2); // it did run twice
    expect(await p.eventsOf(jobId, 'job.failed')).toHaveLength(1);
  });
});
