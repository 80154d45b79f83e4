/**
 * A job's event is sent ahead of its completion on the connection BullMQ completes jobs on, and the job does not
 * wait for the event's reply (`emitAhead` in src/workers/worker.ts). What must hold:
 * - Redis runs every job's event before the job's completion (the order of commands, read through MONITOR);
 * - an event whose script fails on Redis after the job went on is sent again, and appears once;
 * - a bus on another connection than the workers' is refused, since the ordering holds only on one connection.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEventBus } from '../../src/events/bus.js';
import { RamProvider } from '../../src/providers/ram.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { createWorkers } from '../../src/workers/worker.js';
import { TEST_REDIS_URL } from '../support/redis.js';
import { inlineBody, quietLog, startPipeline, type Pipeline } from './fixtures/pipeline.js';

/**
 * Every command Redis runs, one MONITOR line each, in order, read over a plain socket: ioredis' own `monitor()`
 * throws "Command queue state error" when other clients' commands arrive with its MONITOR reply.
 */
async function monitorRedis(): Promise<{ lines: string[]; stop(): void }> {
  const { hostname, port } = new URL(TEST_REDIS_URL);
  const socket = net.connect(Number(port || 6379), hostname);
  const lines: string[] = [];
  let buffer = '';
  let started!: () => void;
  const ok = new Promise<void>((resolve) => (started = resolve));
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    buffer += chunk;
    let end: number;
    while ((end = buffer.indexOf('\r\n')) >= 0) {
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (line === '+OK') started();
      else lines.push(line);
    }
  });
  socket.write('MONITOR\r\n');
  await ok;
  return { lines, stop: () => socket.destroy() };
}

describe('events ahead of completions', () => {
  let p: Pipeline;

  beforeAll(async () => {
    p = await startPipeline('event-order', { stores: new Map<string, StorageProvider>([['main', new RamProvider({ maxBytes: 16 * 1024 * 1024 })]]) });
  });

  afterAll(async () => {
    await p?.close();
  });

  it("runs every job's event on Redis before the job's completion (seen through MONITOR)", async () => {
    const monitor = await monitorRedis();
    const workers = await p.startWorkers({ concurrency: 8 });
    const ids = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => (await p.queues.enqueue('write', { store: 'main', key: `order/${i}`, body: inlineBody(`body ${i}`) })).jobId),
    );
    await Promise.all(ids.map((id) => p.waitForJobState(id, 'completed')));
    await workers.close();
    // A MONITOR line: `+<time> [<db> <client>] "<command>" "<arg>" ...`, quotes inside arguments escaped.
    const isScript = (line: string) => /^\+\S+ \[[^\]]*\] "eval(sha)?" /i.test(line);
    const lateJobs = () =>
      ids.filter((id) => {
        // Our event script carries the job id in its envelope; BullMQ's moveToFinished (14 keys) names the job's hash.
        const event = monitor.lines.findIndex((line) => isScript(line) && line.includes(`\\"jobId\\":\\"${id}\\"`));
        const completion = monitor.lines.findIndex(
          (line) => isScript(line) && /"eval(sha)?" "(?:[^"\\]|\\.)*" "14" /i.test(line) && line.includes(`"${p.prefix}:objects:${id}"`),
        );
        return event < 0 || completion < 0 || event > completion;
      });
    // The last lines may still be on their way when the last job is seen completed.
    let late = lateJobs();
    for (let wait = 0; wait < 40 && late.length > 0; wait++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      late = lateJobs();
    }
    monitor.stop();
    expect(monitor.lines.length).toBeGreaterThan(400);
    expect(late).toEqual([]);
  });

  it('sends an event again when its script failed on Redis after the job went on, and it appears once', async () => {
    const workers = await p.startWorkers({ concurrency: 1 });
    // A stream key of the wrong type makes XADD fail inside the script, after the event was written.
    const aside = `${p.bus.streamKey}:aside`;
    await p.redis.producer.rename(p.bus.streamKey, aside);
    await p.redis.producer.set(p.bus.streamKey, 'not a stream');
    const { jobId } = await p.queues.enqueue('write', { store: 'main', key: 'order/reemit', body: inlineBody('again') });
    await p.waitForJobState(jobId, 'completed');
    expect(await p.redis.producer.type(p.bus.streamKey)).toBe('string');

    await p.redis.producer.del(p.bus.streamKey);
    await p.redis.producer.rename(aside, p.bus.streamKey);
    await p.waitForEvent('object.written', jobId);
    expect(await p.eventsOf(jobId, 'object.written')).toHaveLength(1);
    await workers.close();
  });

  it('refuses a bus on another connection than the workers', () => {
    const elsewhere = createEventBus({ redis: p.redis.producer, prefix: p.prefix, maxLen: 100, log: quietLog });
    expect(() =>
      createWorkers({ connection: p.redis.worker, prefix: p.prefix, stores: p.stores, bus: elsewhere, staging: p.staging, log: quietLog, concurrency: 1 }),
    ).toThrow(/connection/);
  });
});
