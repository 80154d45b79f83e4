/** `?wait=true` underneath: JobWaiter hears of a job that finishes while its first wait is still setting up. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobWaiter } from '../../src/api/job-status.js';
import { createRedis } from '../../src/redis.js';
import { RamProvider } from '../../src/providers/ram.js';
import { inlineBody, startPipeline, type Pipeline } from '../jobs/fixtures/pipeline.js';
import { beforeEachWrite } from '../support/intercept.js';
import { testRedisConfig } from '../support/redis.js';

const ROUNDS = 40;
const WAIT_MS = 5_000;

describe('JobWaiter', () => {
  let p: Pipeline;

  beforeAll(async () => {
    // Writes finish 0-3 ms late, by round: some of them while the waiter's first read is still on its way to Redis.
    let round = 0;
    const store = beforeEachWrite(new RamProvider({ maxBytes: 1024 * 1024 }), () => new Promise((resolve) => setTimeout(resolve, round++ % 4)));
    p = await startPipeline('job-waiter', { stores: new Map([['main', store]]) });
    await p.startWorkers();
  });

  afterAll(async () => {
    await p?.close();
  });

  it('answers the first wait of a new waiter when the job finishes, not when the wait times out', async () => {
    for (let round = 0; round < ROUNDS; round++) {
      // A new waiter each round: its events connection is opened by this first wait, while the worker runs the job.
      const waiter = new JobWaiter(p.queues, { connection: () => createRedis(testRedisConfig, 'worker'), prefix: p.prefix });
      try {
        const { jobId } = await p.queues.enqueue('write', { store: 'main', key: `waited/${round}`, body: inlineBody(`round ${round}`) });
        const started = Date.now();
        const status = await waiter.wait(jobId, WAIT_MS);
        expect(status.state).toBe('completed');
        // A wait that missed the completion returns the same status, but only after sitting out WAIT_MS.
        expect(Date.now() - started, `round ${round}`).toBeLessThan(WAIT_MS / 2);
      } finally {
        await waiter.close();
      }
    }
  });
});
