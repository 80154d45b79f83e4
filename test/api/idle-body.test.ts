/**
 * A request body is cut off (408) when the client sends nothing for `bodyIdleTimeoutMs`, and only then: time its
 * bytes spend waiting for a slow staging store is not the client's idleness.
 */
import { PassThrough, Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { idleLimited } from '../../src/api/submit.js';

const IDLE_MS = 200;

/** A consumer that takes its first chunk only after `stallMs`, then keeps up. */
function slowConsumer(stallMs: number): Writable & { received: number } {
  let stalled = false;
  const consumer = Object.assign(
    new Writable({
      highWaterMark: 1024,
      write(chunk: Buffer, _encoding, callback) {
        consumer.received += chunk.length;
        if (stalled) return callback();
        stalled = true;
        setTimeout(callback, stallMs);
      },
    }),
    { received: 0 },
  );
  return consumer;
}

describe('the request body idle limit', () => {
  it('lets a body through whose consumer stalls for several idle periods while the client has sent it all', async () => {
    const chunks = Array.from({ length: 64 }, () => Buffer.alloc(64 * 1024, 7)); // 4 MiB, all there at once
    const limited = idleLimited(Readable.from(chunks, { objectMode: false }), IDLE_MS);
    const consumer = slowConsumer(IDLE_MS * 4);
    await pipeline(limited.body, consumer);
    expect(consumer.received).toBe(4 * 1024 * 1024);
    expect(limited.expired()).toBe(false);
  });

  it('cuts off a body whose client stops sending, with REQUEST_TIMEOUT', async () => {
    const client = new PassThrough();
    client.write(Buffer.alloc(1024, 1)); // then nothing, and no end
    const limited = idleLimited(client, IDLE_MS);
    const started = Date.now();
    const failure = await pipeline(limited.body, slowConsumer(0)).catch((error: unknown) => error);
    expect(failure).toMatchObject({ code: 'REQUEST_TIMEOUT' });
    expect(limited.expired()).toBe(true);
    expect(Date.now() - started).toBeGreaterThanOrEqual(IDLE_MS - 20);
  });
});
