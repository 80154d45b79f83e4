/**
 * A key's events leave in the order its jobs passed their fences (`workers/key-turns.ts`), which must be the order
 * its mutations land. Before session 20 an unconditional s3 write held no key lock: the fence passed, then the
 * PutObject carried the body, and a body slower to arrive whole (modelled by a middleware that sends the large
 * PutObject's body over ~300 ms; the request starts at once) landed after a later, smaller write whose fence passed
 * after it: the key's events said B last while the store held A. Now fence and request run under the key's lock.
 */
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createS3Provider, type S3Provider } from '../../src/providers/s3.js';
import { startMoto, startS3, s3ProviderOptions, type S3TestEndpoint } from '../support/s3.js';

let s3: S3TestEndpoint;
let provider: S3Provider;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  // moto, like MinIO, makes an object current when its body has arrived whole (s3rver as soon as the request starts).
  s3 = (await startMoto()) ?? (await startS3());
  const bucket = await s3.createBucket();
  provider = await createS3Provider(s3ProviderOptions(s3, bucket, { versioning: 'explicit' }));
  // The network: a large PutObject takes time to arrive whole.
  provider.client.middlewareStack.add(
    (next, context) => async (args) => {
      const request = args.request as { body?: unknown };
      if (context.commandName === 'PutObjectCommand' && Buffer.isBuffer(request.body) && request.body.length > 1024 * 1024) {
        // The request starts now; its body arrives over ~300 ms (what 15 MiB take at ~400 Mbit/s).
        const bytes = request.body;
        request.body = Readable.from(
          (async function* () {
            const step = bytes.length / 10;
            for (let i = 0; i < 10; i++) {
              yield bytes.subarray(i * step, (i + 1) * step);
              await sleep(30);
            }
          })(),
        );
      }
      return next(args);
    },
    { step: 'finalizeRequest', priority: 'low', name: 'slowLink' },
  );
}, 120_000);
afterAll(async () => {
  await provider?.close();
  await s3?.close();
});

describe('s3: fence order is commit order (KeyTurns premise)', () => {
  it('two unconditional writes of one key: the one that passed its fence last is the one that stays current', async () => {
    const fenced: string[] = [];
    const big = Buffer.alloc(15 * 1024 * 1024, 0x61);
    const a = provider.write('doc', big, { fence: async () => void fenced.push('A') });
    while (!fenced.includes('A')) await sleep(1);
    const b = provider.write('doc', 'small B', { fence: async () => void fenced.push('B') });
    const [infoA, infoB] = await Promise.all([a, b]);
    const current = await provider.stat('doc');
    const lastByFence = fenced.at(-1) === 'A' ? infoA.etag : infoB.etag;
    expect({ fenced, currentIs: current.etag === infoA.etag ? 'A' : 'B' }).toEqual({ fenced: ['A', 'B'], currentIs: 'B' });
    expect(current.etag).toBe(lastByFence);
  }, 60_000);
});
