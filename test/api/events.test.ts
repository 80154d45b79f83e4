import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createApp } from '../../src/api/app.js';
import { createEventBus } from '../../src/events/bus.js';
import { listen } from '../../src/api/server.js';
import { quietLog, waitFor } from '../jobs/fixtures/pipeline.js';
import { startTestService, type TestService } from '../support/service.js';

let service: TestService;

beforeAll(async () => {
  service = await startTestService('api-events');
});
afterAll(async () => {
  await service?.close();
});

interface SseEvent {
  id?: string;
  event?: string;
  data?: string;
}

type StreamReader = ReadableStreamDefaultReader<Uint8Array>;

/** Reads SSE messages from a response until `until` says stop (or 30 s pass); then cancels the stream. */
function collect(response: Response, until: (events: SseEvent[]) => boolean): Promise<{ events: SseEvent[]; comments: string[] }> {
  return collectFrom(response.body!.getReader(), until);
}

/** `collect` on a reader, after `text` already read from it. */
async function collectFrom(reader: StreamReader, until: (events: SseEvent[]) => boolean, text = ''): Promise<{ events: SseEvent[]; comments: string[] }> {
  const decoder = new TextDecoder();
  const events: SseEvent[] = [];
  const comments: string[] = [];
  let buffer = text;
  const deadline = Date.now() + 30_000; // generous: on a loaded 2-core machine a ?wait=true write can take seconds
  // One read in flight at a time: a read left behind when the 200 ms tick wins would take the next chunk with it.
  let reading: ReturnType<typeof reader.read> | undefined;
  while (!until(events) && Date.now() < deadline) {
    reading ??= reader.read();
    const result = await Promise.race([reading, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 200))]);
    if (result === undefined) continue;
    reading = undefined;
    if (result.done) break;
    buffer += decoder.decode(result.value, { stream: true });
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event: SseEvent = {};
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) comments.push(line.slice(1).trim());
        else if (line.startsWith('id: ')) event.id = line.slice(4);
        else if (line.startsWith('event: ')) event.event = line.slice(7);
        else if (line.startsWith('data: ')) event.data = (event.data ?? '') + line.slice(6);
      }
      if (event.event) events.push(event);
    }
  }
  await reader.cancel();
  return { events, comments };
}

const write = (key: string, body: string) => service.app.request(`/v1/stores/mem/objects/${key}?wait=true`, { method: 'PUT', body });

describe('GET /v1/events (SSE)', () => {
  it('streams live events in order, filtered by ?types=', async () => {
    const response = await service.app.request('/v1/events?types=object.written');
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/text\/event-stream/);
    const collecting = collect(response, (events) => events.length >= 3);
    await new Promise((resolve) => setTimeout(resolve, 100));
    for (const key of ['sse/1', 'sse/2', 'sse/3']) await write(key, key);
    await service.app.request('/v1/stores/mem/objects/sse/1?wait=true', { method: 'DELETE' }); // filtered out
    const { events, comments } = await collecting;
    expect(comments).toContain('connected');
    expect(events.map((event) => event.event)).toEqual(['object.written', 'object.written', 'object.written']);
    expect(events.map((event) => (JSON.parse(event.data!) as { key: string }).key)).toEqual(['sse/1', 'sse/2', 'sse/3']);
    const envelope = JSON.parse(events[0]!.data!) as { id: string; jobId: string; store: string; data: { etag: string } };
    expect(envelope).toMatchObject({ id: events[0]!.id, store: 'mem' });
    expect(envelope.jobId).toMatch(/^objects-/);
  });

  it('resumes after Last-Event-ID: replays what came after it, then goes live', async () => {
    await write('resume/a', 'a');
    const history = await service.deps.bus.readSince(undefined, ['object.written'], 10_000);
    const resumeFrom = history[history.length - 1]!.id;
    await write('resume/b', 'b');
    await write('resume/c', 'c');

    const response = await service.app.request('/v1/events?types=object.written', { headers: { 'Last-Event-ID': resumeFrom } });
    const collecting = collect(response, (events) => events.length >= 3);
    await new Promise((resolve) => setTimeout(resolve, 100));
    await write('resume/d', 'd');
    const { events } = await collecting;
    expect(events.map((event) => (JSON.parse(event.data!) as { key: string }).key)).toEqual(['resume/b', 'resume/c', 'resume/d']);
  });

  it('resumed by a client that reads slowly under live traffic: every event once, in order', async () => {
    const emit = async (key: string) => (await service.deps.bus.emit({ type: 'object.written', store: 'mem', key, data: {} }))!;
    const keys = (prefix: string, count: number) => Array.from({ length: count }, (_, i) => `slow/${prefix}-${i}`);
    const from = (await emit('slow/start')).id;
    for (const key of keys('history', 10)) await emit(key);

    // The stream holds only a few unread chunks, so each write past them waits for the client to read.
    const response = await service.app.request('/v1/events?types=object.written', { headers: { 'Last-Event-ID': from } });
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    let text = '';
    const readEvents = async (count: number) => {
      while ((text.match(/^event: /gm) ?? []).length < count) text += decoder.decode((await reader.read()).value, { stream: true });
    };
    // The replay has begun: these come while it waits for the client, and are held back as live events.
    await readEvents(1);
    for (const key of keys('held', 6)) await emit(key);
    // Reading the rest of the replay lets the held-back events go out, until the stream is full again; two more
    // come while the server waits on the client in the middle of them.
    await readEvents(10);
    await new Promise((resolve) => setTimeout(resolve, 100));
    for (const key of keys('late', 2)) await emit(key);

    const { events } = await collectFrom(reader, (events) => events.length >= 18, text);
    expect(events.map((event) => (JSON.parse(event.data!) as { key: string }).key)).toEqual([
      ...keys('history', 10),
      ...keys('held', 6),
      ...keys('late', 2),
    ]);
  });

  it('disconnects a client that stops reading once too many events wait for it, and keeps no listener', async () => {
    const before = service.deps.bus.listenerCount();
    const app = createApp({ ...service.deps, sseMaxWaitingEvents: 20 });
    const response = await app.request('/v1/events?types=object.written');
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    const text = decoder.decode((await reader.read()).value); // ': connected': live delivery is on
    await Promise.all(Array.from({ length: 60 }, (_, i) => service.deps.bus.emit({ type: 'object.written', store: 'mem', key: `flood/${i}`, data: {} })));
    // The stream ends after what was already written to it (bounded: a stream that never ends fails here).
    const { events } = await collectFrom(reader, () => false, text);
    expect(events.length).toBeLessThan(60);
    for (let i = 0; i < 50 && service.deps.bus.listenerCount() !== before; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(service.deps.bus.listenerCount()).toBe(before);
  });

  it('disconnects a resuming client that stops reading during its replay once too many live events wait, and keeps no listener', async () => {
    const before = service.deps.bus.listenerCount();
    // Over real HTTP: the replay blocks once the socket's buffers are full, as with a real client that stalls.
    const server = await listen(createApp({ ...service.deps, sseMaxWaitingEvents: 20 }), { host: '127.0.0.1', port: 0, apiTokens: [] }, quietLog);
    const client = new AbortController();
    try {
      const padding = 'x'.repeat(4000);
      // The burst reaches this process's subscriber too, 8 MB of it, which takes a while on a loaded machine: were the
      // stream to subscribe before it has all arrived, its tail would count as live events waiting, and the stream
      // would end before its first byte. Only the replay is to be stalled here: the burst is heard out first.
      let heard = 0;
      const probe = await service.deps.bus.subscribe(['object.written'], () => heard++);
      const first = (await service.deps.bus.emit({ type: 'object.written', store: 'mem', key: 'replayed/start', data: {} }))!;
      await Promise.all(Array.from({ length: 2000 }, (_, i) => service.deps.bus.emit({ type: 'object.written', store: 'mem', key: `replayed/${i}`, data: { padding } })));
      await waitFor(() => heard === 2001, { what: 'the burst heard by this process' });
      await probe();
      await fetch(`${server.url}/v1/events?types=object.written`, { headers: { 'Last-Event-ID': first.id }, signal: client.signal }); // never read
      await waitFor(() => service.deps.bus.listenerCount() > before, { what: 'the stream subscribed' });
      await new Promise((resolve) => setTimeout(resolve, 300)); // the replay fills the socket and stalls
      for (let i = 0; i < 60; i++) await service.deps.bus.emit({ type: 'object.written', store: 'mem', key: `live/${i}`, data: {} });
      await waitFor(() => service.deps.bus.listenerCount() === before, { what: 'the stalled client disconnected' });
    } finally {
      client.abort();
      await server.close(0);
    }
  });

  it('closes the connection of a client that stopped reading, not only its stream: a stalled client holds no socket', async () => {
    const server = await listen(createApp({ ...service.deps, sseMaxWaitingEvents: 20 }), { host: '127.0.0.1', port: 0, apiTokens: [] }, quietLog);
    const port = Number(new URL(server.url).port);
    const connections = () => new Promise<number>((resolve) => server.node.getConnections((_, count) => resolve(count)));
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => undefined); // reset by the server: what this test waits for
    try {
      await new Promise((resolve) => socket.once('connect', resolve));
      socket.write(`GET /v1/events?types=object.written HTTP/1.1\r\nHost: localhost:${port}\r\nAccept: text/event-stream\r\n\r\n`);
      await waitFor(async () => (await connections()) === 1 && service.deps.bus.listenerCount() > 0, { what: 'the stream subscribed' });
      socket.pause(); // reads nothing more: the kernel's buffers fill, then the events wait in the server
      const padding = 'x'.repeat(20_000);
      for (let i = 0; i < 300; i++) await service.deps.bus.emit({ type: 'object.written', store: 'mem', key: `stalled/${i}`, data: { padding } });
      await waitFor(async () => (await connections()) === 0, { what: 'the server closed the stalled connection' });
    } finally {
      socket.destroy();
      await server.close(0);
    }
  });

  it('ends the stream of a client that takes nothing for a whole heartbeat period while writes wait for it: a stalled client frees its slot', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] }); // heartbeat periods pass when the test says
    const app = createApp({ ...service.deps, sseMaxStreams: 1 });
    const server = await listen(app, { host: '127.0.0.1', port: 0, apiTokens: [] }, quietLog);
    const port = Number(new URL(server.url).port);
    const before = service.deps.bus.listenerCount();
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => undefined); // reset by the server: what this test waits for
    try {
      await new Promise((resolve) => socket.once('connect', resolve));
      socket.write(`GET /v1/events?types=object.written HTTP/1.1\r\nHost: localhost:${port}\r\nAccept: text/event-stream\r\n\r\n`);
      await waitFor(() => service.deps.bus.listenerCount() > before, { what: 'the stream subscribed' });
      socket.pause(); // reads nothing more
      // Enough to fill the socket's buffers, far fewer than the 1,000 waiting events that disconnect a client; then
      // no event comes, as on a quiet system.
      const padding = 'x'.repeat(20_000);
      for (let i = 0; i < 300; i++) await service.deps.bus.emit({ type: 'object.written', store: 'mem', key: `quiet/${i}`, data: { padding } });
      expect((await app.request('/v1/events')).status).toBe(503); // its one slot is held
      const freed = await waitFor(
        async () => {
          vi.advanceTimersToNextTimer();
          const response = await app.request('/v1/events');
          await response.body?.cancel();
          return response.status !== 503 && response.status;
        },
        { what: 'the stalled stream ended and its slot was freed' },
      );
      expect(freed).toBe(200);
    } finally {
      vi.useRealTimers();
      socket.destroy();
      await server.close(0);
    }
  });

  it('a stream ends after its lifetime, once what was queued went out; its client resumes from its last id and misses nothing', async () => {
    const app = createApp({ ...service.deps, sseMaxStreams: 1, sseMaxStreamMs: 1_500 });
    const first = await app.request('/v1/events?types=object.written');
    const reader = first.body!.getReader();
    await new Promise((resolve) => setTimeout(resolve, 100));
    const before = (await service.deps.bus.emit({ type: 'object.written', store: 'mem', key: 'lifetime/1', data: {} }))!;
    // Read until the server ends the stream (about 1.5 s from its start).
    let text = '';
    let ended = false;
    const decoder = new TextDecoder();
    const deadline = Date.now() + 15_000;
    while (!ended && Date.now() < deadline) {
      const result = await Promise.race([reader.read(), new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), deadline - Date.now()))]);
      if (result === undefined) break;
      if (result.done) ended = true;
      else text += decoder.decode(result.value, { stream: true });
    }
    expect(ended).toBe(true);
    expect(text).toContain(`id: ${before.id}`);
    // Its slot is free again; meanwhile an event came, which the client gets when it comes back.
    const after = (await service.deps.bus.emit({ type: 'object.written', store: 'mem', key: 'lifetime/2', data: {} }))!;
    const again = await app.request('/v1/events?types=object.written', { headers: { 'Last-Event-ID': before.id } });
    expect(again.status).toBe(200);
    const resumed = await collect(again, (received) => received.length >= 1);
    expect(resumed.events.map((event) => event.id)).toEqual([after.id]);
  }, 40_000);

  it("an event dropped at the end of a stream's life is replayed when its client comes back: no heartbeat id skips it", async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] }); // heartbeat periods pass when the test says
    try {
      const bus = service.deps.bus;
      const app = createApp({ ...service.deps, sseMaxStreamMs: 400 });
      const response = await app.request('/v1/events?types=object.written');
      const reader = response.body!.getReader();
      const decoder = new TextDecoder();
      let text = decoder.decode((await reader.read()).value);
      // A client that reads nothing for now: its writes queue up, and the stream's end waits for them.
      for (let i = 0; i < 30; i++) await bus.emit({ type: 'object.written', store: 'mem', key: `ending/${i}`, data: { pad: 'x'.repeat(2000) } });
      await new Promise((resolve) => setTimeout(resolve, 700)); // past its lifetime: draining
      await bus.emit({ type: 'object.written', store: 'mem', key: 'ending/dropped', data: {} });
      await bus.emit({ type: 'object.deleted', store: 'mem', key: 'ending/other-type', data: {} });
      await new Promise((resolve) => setTimeout(resolve, 50));
      vi.advanceTimersToNextTimer(); // a heartbeat period passes during the drain
      for (let next = await reader.read(); !next.done; next = await reader.read()) text += decoder.decode(next.value, { stream: true });
      expect(text).not.toContain('ending/dropped');
      const lastId = [...text.matchAll(/^id: (.*)$/gm)].map((match) => match[1]).at(-1)!;
      const again = await app.request('/v1/events?types=object.written', { headers: { 'Last-Event-ID': lastId } });
      const resumed = await collect(again, (events) => events.some((event) => event.data?.includes('ending/dropped')));
      expect(resumed.events.map((event) => (JSON.parse(event.data!) as { key: string }).key)).toContain('ending/dropped');
    } finally {
      vi.useRealTimers();
    }
  }, 60_000);

  it('keeps the stream of a client that reads slowly but takes something every heartbeat period', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    try {
      const response = await service.app.request('/v1/events?types=object.written');
      const reader = response.body!.getReader();
      const decoder = new TextDecoder();
      let text = decoder.decode((await reader.read()).value); // ': connected'
      // More than it reads in the periods below: writes wait for it the whole time.
      for (let i = 0; i < 20; i++) await service.deps.bus.emit({ type: 'object.written', store: 'mem', key: `steady/${i}`, data: {} });
      for (let period = 0; period < 5; period++) {
        vi.advanceTimersToNextTimer();
        const chunk = await reader.read(); // one message a period
        expect(chunk.done).toBe(false);
        text += decoder.decode(chunk.value, { stream: true });
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const { events } = await collectFrom(reader, (events) => events.length >= 20, text);
      expect(events.map((event) => (JSON.parse(event.data!) as { key: string }).key)).toEqual(Array.from({ length: 20 }, (_, i) => `steady/${i}`));
    } finally {
      vi.useRealTimers();
    }
  });

  it('resuming from an id ahead of the stream loses no event emitted while the stream is set up', async () => {
    const bus = service.deps.bus;
    let duringSetup: string | undefined;
    // The event lands after the route subscribed and before Redis answered its look at the stream's bounds.
    const slowBounds = { ...bus, bounds: async () => ((duringSetup = (await bus.emit({ type: 'object.written', store: 'mem', key: 'setup/during', data: {} }))!.id), bus.bounds()) };
    const app = createApp({ ...service.deps, bus: slowBounds });
    const response = await app.request('/v1/events?types=object.written', { headers: { 'Last-Event-ID': `${Date.now() + 3_600_000}-0` } });
    const { events } = await collect(response, (received) => received.some((event) => event.id === duringSetup));
    expect(events.map((event) => event.id)).toContain(duringSetup); // with whatever else was emitted since it subscribed
  });

  it('a replay that fails ends the stream without telling the client the internal error (session 11)', async () => {
    const bus = service.deps.bus;
    const since = (await bus.emit({ type: 'object.written', store: 'mem', key: 'replay/failing', data: {} }))!.id;
    const failing = { ...bus, readSince: async () => Promise.reject(new Error('internal detail: ECONNRESET 10.0.0.3:6379')) };
    const response = await createApp({ ...service.deps, bus: failing }).request('/v1/events', { headers: { 'Last-Event-ID': since } });
    expect(response.status).toBe(200);
    const text = await response.text(); // the stream ends by itself
    expect(text).not.toContain('internal detail');
    expect(text).not.toMatch(/^event: error$/m);
    expect(service.deps.bus.listenerCount()).toBe(0);
  });

  it('tells a client resuming from an id the stream has trimmed away that it missed events, then replays what is left', async () => {
    const first = (await service.deps.bus.emit({ type: 'object.written', store: 'mem', key: 'trimmed/0', data: {} }))!;
    for (let i = 1; i <= 20; i++) await service.deps.bus.emit({ type: 'object.written', store: 'mem', key: `trimmed/${i}`, data: {} });
    await service.deps.redis.xtrim(service.deps.bus.streamKey, 'MAXLEN', 5);
    const response = await service.app.request('/v1/events', { headers: { 'Last-Event-ID': first.id } });
    const { events } = await collect(response, (received) => received.some((event) => event.data?.includes('trimmed/20')));
    expect(events[0]?.event).toBe('gap');
    expect(JSON.parse(events[0]!.data!)).toMatchObject({ since: first.id });
    const keys = events.slice(1).map((event) => (JSON.parse(event.data!) as { key: string }).key);
    expect(keys).toEqual(['trimmed/16', 'trimmed/17', 'trimmed/18', 'trimmed/19', 'trimmed/20']);
  });

  it('a replay the stream is trimmed past between two pages ends; the client resuming from its last event is told the gap (session 18)', async () => {
    const bus = createEventBus({ redis: service.deps.redis, prefix: `${service.config.queuePrefix}:trim-during-replay`, maxLen: 10_000, log: quietLog });
    const ids: string[] = [];
    try {
      const since = (await bus.emit({ type: 'object.written', store: 'mem', key: 'before', data: {} }))!.id;
      for (let i = 0; i < 1_200; i++) ids.push((await bus.emit({ type: 'object.written', store: 'mem', key: `replayed/${i}`, data: {} }))!.id);
      // Other events trim the stream while the client takes its first page (500): the next 19 go unread.
      let reads = 0;
      const trimming = {
        ...bus,
        readSince: async (...args: Parameters<typeof bus.readSince>) => {
          if (reads++ === 1) await service.deps.redis.xtrim(bus.streamKey, 'MINID', ids[519]!);
          return bus.readSince(...args);
        },
      };
      const first = await createApp({ ...service.deps, bus: trimming }).request('/v1/events?types=object.written', { headers: { 'Last-Event-ID': since } });
      const text = await first.text(); // the stream ends by itself
      const sent = [...text.matchAll(/^id: (.+)$/gm)].map((match) => match[1]);
      expect(sent).toEqual(ids.slice(0, 500));
      expect(text).not.toMatch(/^event: gap$/m);

      const again = await createApp({ ...service.deps, bus }).request('/v1/events?types=object.written', { headers: { 'Last-Event-ID': sent.at(-1)! } });
      const { events } = await collect(again, (received) => received.some((event) => event.id === ids.at(-1)));
      expect(events[0]).toMatchObject({ event: 'gap' });
      expect(events.slice(1).map((event) => event.id)).toEqual(ids.slice(519));
    } finally {
      await service.deps.redis.del(bus.streamKey);
      await bus.close();
    }
  });

  it('a resume point before the first event of a stream whole since before it reports no gap; one before the mark does (session 16)', async () => {
    const bus = createEventBus({ redis: service.deps.redis, prefix: `${service.config.queuePrefix}:whole`, maxLen: 1_000, log: quietLog });
    const app = createApp({ ...service.deps, bus });
    const resumeFrom = async (since: string) => {
      const response = await app.request('/v1/events', { headers: { 'Last-Event-ID': since } });
      return (await collect(response, (received) => received.some((event) => event.event === 'object.written'))).events.map((event) => event.event);
    };
    try {
      await bus.markWholeSince();
      const marked = (await bus.bounds()).wholeSince!;
      expect(marked).toMatch(/^\d{13}-0$/);
      const markedMs = Number(marked.split('-')[0]);
      await new Promise((resolve) => setTimeout(resolve, 20));
      await bus.emit({ type: 'object.written', store: 'mem', key: 'whole/1', data: {} });
      await bus.markWholeSince(); // the stream has an entry: the mark stays where it was
      expect((await bus.bounds()).wholeSince).toBe(marked);
      // After the mark and before the first event: nothing can have been missed.
      expect(await resumeFrom(`${markedMs + 5}-0`)).toEqual(['object.written']);
      // Before the mark: events of a stream before this one may be gone.
      expect(await resumeFrom(`${markedMs - 1_000}-0`)).toEqual(['gap', 'object.written']);
      // Once trimmed, only what the stream still holds counts again.
      for (let i = 2; i <= 4; i++) await bus.emit({ type: 'object.written', store: 'mem', key: `whole/${i}`, data: {} });
      await service.deps.redis.xtrim(bus.streamKey, 'MAXLEN', 1);
      expect(await resumeFrom(`${markedMs + 5}-0`)).toEqual(['gap', 'object.written']);
      // The mark goes with the stream: lost and made again by an emit, a resume point before its first event is a gap.
      await service.deps.redis.del(bus.streamKey);
      await bus.emit({ type: 'object.written', store: 'mem', key: 'whole/5', data: {} });
      expect((await bus.bounds()).wholeSince).toBeUndefined();
      expect(await resumeFrom(`${markedMs + 5}-0`)).toEqual(['gap', 'object.written']);
    } finally {
      await bus.close();
      await service.deps.redis.del(bus.streamKey);
    }
  });

  it('tells a client resuming after the stream was lost and made again (Redis without persistence) that it missed events', async () => {
    const seen = (await service.deps.bus.emit({ type: 'object.written', store: 'mem', key: 'lost/0', data: {} }))!;
    await service.deps.bus.emit({ type: 'object.written', store: 'mem', key: 'lost/1', data: {} });
    await service.deps.redis.del(service.deps.bus.streamKey); // nothing trimmed: the stream itself is gone
    await new Promise((resolve) => setTimeout(resolve, 10)); // as a restart takes: new ids start from a later millisecond
    await service.deps.bus.emit({ type: 'object.written', store: 'mem', key: 'lost/2', data: {} });
    const response = await service.app.request('/v1/events', { headers: { 'Last-Event-ID': seen.id } });
    const { events } = await collect(response, (received) => received.some((event) => event.data?.includes('lost/2')));
    expect(events.map((event) => event.event)).toEqual(['gap', 'object.written']);
    expect(JSON.parse(events[0]!.data!)).toMatchObject({ since: seen.id });
    // Back before anything was emitted again (an EventSource retries within seconds): no entry at all is a gap too.
    await service.deps.redis.del(service.deps.bus.streamKey);
    const early = await service.app.request('/v1/events', { headers: { 'Last-Event-ID': seen.id } });
    const collected = collect(early, (received) => received.length > 0);
    expect((await collected).events.map((event) => event.event)).toEqual(['gap']);
    // From the very start of a stream nothing was trimmed from, however zero is spelled, nothing is missing.
    await service.deps.bus.emit({ type: 'object.written', store: 'mem', key: 'lost/3', data: {} });
    const fromStart = await service.app.request('/v1/events?since=00');
    expect((await collect(fromStart, (received) => received.some((event) => event.data?.includes('lost/3')))).events.map((event) => event.event)).toEqual([
      'object.written',
    ]);
  });

  it('takes an empty Last-Event-ID as none, and ?since= as milliseconds alone', async () => {
    const emitted = (await service.deps.bus.emit({ type: 'object.written', store: 'mem', key: 'since/ms', data: {} }))!;
    const empty = await service.app.request('/v1/events', { headers: { 'Last-Event-ID': '' } });
    expect(empty.status).toBe(200);
    await empty.body?.cancel();
    const before = Number(emitted.id.split('-')[0]) - 1;
    const response = await service.app.request(`/v1/events?since=${before}`);
    expect(response.status).toBe(200);
    const { events } = await collect(response, (received) => received.some((event) => event.data?.includes('since/ms')));
    expect(events.some((event) => event.id === emitted.id)).toBe(true);
  });

  it('resumes from the stream\'s end when Last-Event-ID is ahead of it (or the largest id there is): live events still come', async () => {
    for (const since of [`${Date.now() + 3_600_000}-0`, '18446744073709551615-18446744073709551615']) {
      const response = await service.app.request('/v1/events', { headers: { 'Last-Event-ID': since } });
      const collected = collect(response, (received) => received.some((event) => event.data?.includes(`ahead/${since}`)));
      await waitFor(() => service.deps.bus.listenerCount() > 0, { what: 'the stream subscribed' });
      await new Promise((resolve) => setTimeout(resolve, 100));
      await service.deps.bus.emit({ type: 'object.written', store: 'mem', key: `ahead/${since}`, data: {} });
      const { events } = await collected;
      expect(events.map((event) => event.event), since).toEqual(['object.written']);
    }
  });

  it('answers HEAD with the stream\'s headers and keeps no listener for it', async () => {
    const before = service.deps.bus.listenerCount();
    for (let i = 0; i < 3; i++) {
      const response = await service.app.request('/v1/events', { method: 'HEAD' });
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    }
    expect(service.deps.bus.listenerCount()).toBe(before);
  });

  it('frames the stream as the client\'s HTTP version allows: chunked for HTTP/1.1, as it is for HTTP/1.0', async () => {
    const server = await listen(service.app, { host: '127.0.0.1', port: 0, apiTokens: [] }, quietLog);
    const port = Number(new URL(server.url).port);
    /** The answer's head and the first bytes of its body, to the first event sent after the stream is open. */
    const streamOver = async (version: string) => {
      const socket = net.connect(port, '127.0.0.1');
      let received = '';
      socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
      try {
        await new Promise((resolve) => socket.once('connect', resolve));
        socket.write(`GET /v1/events?types=object.written HTTP/${version}\r\nHost: localhost:${port}\r\nAccept: text/event-stream\r\n\r\n`);
        // Written once the stream listens for live events.
        await waitFor(() => received.includes(': connected'), { what: `an HTTP/${version} stream open` });
        await service.deps.bus.emit({ type: 'object.written', store: 'mem', key: `http-${version}`, data: {} });
        await waitFor(() => received.includes(`http-${version}`), { what: `the event over HTTP/${version}` });
        const [head = '', body = ''] = received.split('\r\n\r\n');
        return { head: head.toLowerCase(), body };
      } finally {
        socket.destroy();
      }
    };
    try {
      const old = await streamOver('1.0');
      expect(old.head).toMatch(/^http\/1\.1 200 /);
      expect(old.head).not.toContain('transfer-encoding');
      expect(old.head).not.toContain('keep-alive');
      expect(old.body.startsWith(': connected\n\n')).toBe(true); // no chunk sizes in front
      const current = await streamOver('1.1');
      expect(current.head).toContain('transfer-encoding: chunked');
      expect(current.body).toMatch(/^[0-9a-f]+\r\n: connected\n\n\r\n/);
    } finally {
      await server.close(0);
    }
  });

  it('takes ?types= repeated as the union of its values, as ?types=a,b', async () => {
    const response = await service.app.request('/v1/events?types=object.written&types=object.deleted');
    expect(response.status).toBe(200);
    const collecting = collect(response, (events) => events.some((event) => event.event === 'object.written'));
    for (const type of ['object.deleted', 'version.created', 'object.written'] as const) {
      await service.deps.bus.emit({ type, store: 'mem', key: `repeated/${type}`, data: {} });
    }
    const { events } = await collecting;
    expect(events.map((event) => event.event)).toEqual(['object.deleted', 'object.written']);
  });

  it('refuses ?types= repeated with an unknown type in any of its values with 400, naming it', async () => {
    const response = await service.app.request('/v1/events?types=object.written&types=object.exploded');
    expect(response.status).toBe(400);
    const { error } = (await response.json()) as { error: { code: string; message: string } };
    expect(error.code).toBe('BAD_REQUEST');
    expect(error.message).toContain('object.exploded');
  });

  it('refuses a Last-Event-ID beyond what a stream id can hold with 400, before the stream starts', async () => {
    const response = await service.app.request('/v1/events', { headers: { 'Last-Event-ID': '99999999999999999999999-0' } });
    expect(response.status).toBe(400);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe('BAD_REQUEST');
  });

  it('moves the resume point of a client of some types past the others in its heartbeats: it resumes with no false gap', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] }); // heartbeat periods pass when the test says
    const emit = async (type: 'object.deleted' | 'object.written', key: string) => (await service.deps.bus.emit({ type, store: 'mem', key, data: {} }))!.id;
    try {
      const response = await service.app.request('/v1/events?types=object.deleted');
      const reader = response.body!.getReader();
      const decoder = new TextDecoder();
      let text = '';
      let reading: ReturnType<typeof reader.read> | undefined;
      /** Reads until `part` came; `tick` runs whenever nothing came for 100 ms. */
      const readUntil = async (part: string, tick = () => {}) => {
        while (!text.includes(part)) {
          reading ??= reader.read();
          const result = await Promise.race([reading, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 100))]);
          if (result === undefined) {
            tick();
            continue;
          }
          reading = undefined;
          if (result.done) throw new Error(`the stream ended before ${part}`);
          text += decoder.decode(result.value, { stream: true });
        }
      };
      await readUntil(': connected');
      const wanted = await emit('object.deleted', 'filtered/wanted');
      let passed = '';
      for (let i = 0; i < 20; i++) passed = await emit('object.written', `filtered/other-${i}`);
      await readUntil(`id: ${wanted}\n`);
      await waitFor(() => service.deps.bus.listenerCount() > 0 && text.includes('filtered/wanted'), { what: 'the wanted event' });
      await readUntil(`id: ${passed}\n: heartbeat\n\n`, () => vi.advanceTimersToNextTimer()); // heartbeat periods pass
      const after = await emit('object.deleted', 'filtered/after'); // still sent: after the moved resume point
      await readUntil(`id: ${after}\n`);
      await reader.cancel();
      expect(text).not.toContain('filtered/other-'); // of another type: none sent

      // The stream moves on past the client's last event of its types (trimmed): resumed from the id it holds,
      // that is no loss; resumed from its last event of its types, as before, it was reported as one.
      await service.deps.redis.xtrim(service.deps.bus.streamKey, 'MINID', passed);
      const resumed = await service.app.request('/v1/events?types=object.deleted', { headers: { 'Last-Event-ID': passed } });
      const replay = collect(resumed, (events) => events.length >= 1);
      const { events } = await replay;
      expect(events.map((event) => event.event)).toEqual(['object.deleted']);
      expect(events[0]!.id).toBe(after);
    } finally {
      vi.useRealTimers();
    }
  });

  it('a client that goes away leaves no listener behind', async () => {
    const before = service.deps.bus.listenerCount();
    const response = await service.app.request('/v1/events');
    const stopAt = Date.now() + 300;
    await collect(response, () => Date.now() > stopAt);
    await new Promise((resolve) => setTimeout(resolve, 100));
    // Delivering an event to a closed stream must not throw, and the server keeps serving.
    await write('after/close', 'x');
    expect((await service.app.request('/health')).status).toBe(200);
    expect(service.deps.bus.listenerCount()).toBe(before);
  });
});

describe('GET /v1/events when no stream can be served now', () => {
  it('answers an EventSource 200 with a retry delay and an empty stream (a 503 ends one for good), other clients 503', async () => {
    const full = createApp({ ...service.deps, sseMaxStreams: 1 });
    const redisDown = createApp({ ...service.deps, redis: Object.assign(Object.create(service.deps.redis) as typeof service.deps.redis, { status: 'reconnecting' }) });
    const held = await full.request('/v1/events');
    expect(held.status).toBe(200);
    try {
      for (const app of [full, redisDown]) {
        const eventSource = await app.request('/v1/events', { headers: { Accept: 'text/event-stream' } });
        expect(eventSource.status).toBe(200);
        expect(eventSource.headers.get('content-type')).toMatch(/^text\/event-stream/);
        const retry = /^: .+\nretry: (\d+)\n\n$/.exec(await eventSource.text());
        expect(Number(retry?.[1])).toBeGreaterThanOrEqual(5_000); // 5 to 10 s: an outage's clients do not come back at once
        expect(Number(retry?.[1])).toBeLessThan(10_000);
        const other = await app.request('/v1/events');
        expect(other.status).toBe(503);
        expect(other.headers.get('retry-after')).toBe('5');
        await other.body?.cancel();
      }
    } finally {
      await held.body?.cancel();
    }
  });
});

describe('GET /v1/events while Redis takes no new connection', () => {
  it('answers 503 with Retry-After, not 500, when its subscriber connection cannot open (maxclients) (session 11)', async () => {
    // A proxy in front of Redis that, once told, answers new connections as a Redis at maxclients does; the web
    // process's own connection keeps working, so only the subscriber's fails.
    let refuseNew = false;
    const proxy = net.createServer((client) => {
      if (refuseNew) return void client.end('-ERR max number of clients reached\r\n');
      const upstream = net.connect(6379, '127.0.0.1');
      client.pipe(upstream).pipe(client);
      const end = () => (client.destroy(), upstream.destroy());
      for (const socket of [client, upstream]) socket.on('error', end).on('close', end);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const full = await startTestService('api-events-maxclients', { REDIS_URL: `redis://127.0.0.1:${(proxy.address() as net.AddressInfo).port}` }, { worker: false });
    try {
      refuseNew = true;
      expect(await full.deps.redis.ping()).toBe('PONG');
      const started = Date.now();
      const response = await full.app.request('/v1/events');
      expect(response.status).toBe(503);
      expect(response.headers.get('retry-after')).toBe('5');
      expect(((await response.json()) as { error: { code: string } }).error.code).toBe('SERVICE_UNAVAILABLE');
      expect(Date.now() - started).toBeLessThan(9_000);
      expect(full.deps.bus.listenerCount()).toBe(0);
      refuseNew = false;
      const again = await full.app.request('/v1/events');
      expect(again.status).toBe(200);
      await again.body?.cancel();
    } finally {
      refuseNew = false;
      await full.close();
      proxy.close();
    }
  }, 30_000);
});
