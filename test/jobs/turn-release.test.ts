/**
 * A job's event waits for the earlier turns on its key (`providers/key-turns.ts`). A staged write released its staged
 * body inside its handler, before its event, so a staging store slow to delete (an s3 staging bucket that hangs: 10 s
 * a try) held up every later mutation of the key in the process, even an inline write that touches no staging: it
 * waited past WAIT_TIMEOUT_MS (found in session 20's review of its own change). Now the release runs once the event
 * is out (`JobContext.afterEvent`). Here the staging delete waits until the test lets it go.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { beforeCalls } from '../support/intercept.js';
import { startTestService, type TestService } from '../support/service.js';

let service: TestService;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
let letDeletesGo!: () => void;
const deletesMayGo = new Promise<void>((resolve) => (letDeletesGo = resolve));
let deletesWaiting = 0;

beforeAll(async () => {
  service = await startTestService(
    'turn-release',
    { STORES: 'mem:ram', STAGING_INLINE_MAX: '1024', WAIT_TIMEOUT_MS: '5000' },
    {
      // The worker's staging deletes wait until the test lets them go.
      staging: {
        worker: (staging) =>
          beforeCalls(staging, ['delete'], () => {
            deletesWaiting++;
            return deletesMayGo;
          }),
      },
    },
  );
}, 60_000);

afterAll(async () => {
  letDeletesGo();
  await service?.close();
});

describe('a staged write\'s release', () => {
  it('does not hold up the next write of the key: an inline write after it completes while the release waits', async () => {
    const big = Buffer.alloc(8192, 0x61);
    const a = await service.app.request('/v1/stores/mem/objects/hot', { method: 'PUT', body: big });
    expect(a.status).toBe(202);
    // A committed (the object is A's) — only its release is left.
    for (let i = 0; i < 200; i++) {
      const current = await service.app.request('/v1/stores/mem/objects/hot');
      if (current.status === 200 && (await current.arrayBuffer()).byteLength === big.length) break;
      await sleep(10);
    }
    const b = await service.app.request('/v1/stores/mem/objects/hot?wait=true', { method: 'PUT', body: 'B!' });
    // Answered with its result (not 202 after WAIT_TIMEOUT_MS) while the staged write's release still waits.
    expect({ status: b.status, releasesWaiting: deletesWaiting }).toEqual({ status: 200, releasesWaiting: 1 });
    letDeletesGo();
  }, 60_000);
});
