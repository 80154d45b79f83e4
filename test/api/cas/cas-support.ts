/**
 * Linearizability-style checks of conditional writes through the whole service (web + worker processes over HTTP).
 *
 * Every CAS write's content names what it replaced: `{ n, prev, client, i }` where `prev` is the etag of the
 * object the client read (and sent as If-Match). So the successful writes must form ONE chain from the seed:
 * every etag is the `prev` of at most one successful write (two would be a lost update), and the final object's
 * counter is the seed's + the number of successes.
 */
import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';
import { serviceProcess, startDeployment, sleep, type Deployment, type Entry, type ServiceProcess } from '../../reliability/fixtures/processes.js';
import { TEST_REDIS_URL, uniquePrefix } from '../../support/redis.js';

export const TOKEN = 'cas-test-token-0123456789';
export const AUTH = { Authorization: `Bearer ${TOKEN}` };

export const sha = (text: string | Buffer) => createHash('sha256').update(text).digest('hex');

export interface Cluster {
  base: string;
  prefix: string;
  deployment: Deployment;
  extraWorkers: ServiceProcess[];
  redis: Redis;
  close(): Promise<void>;
}

/** A web process + `workers` worker processes. */
export async function startCluster(label: string, env: Record<string, string>, { workers = 2 } = {}): Promise<Cluster> {
  const prefix = uniquePrefix(label);
  const common = { API_TOKENS: TOKEN, DISK_FSYNC: 'false', WAIT_TIMEOUT_MS: '20000', JOB_ATTEMPTS: '3', ...env };
  const deployment = await startDeployment({
    label,
    redisUrl: TEST_REDIS_URL,
    prefix,
    env: common,
    worker: 'worker' as Entry,
  });
  const extraWorkers: ServiceProcess[] = [];
  for (let i = 1; i < workers; i++) {
    const w = serviceProcess('worker', deployment.env);
    await w.start();
    extraWorkers.push(w);
  }
  const redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 2 });
  return {
    base: deployment.base,
    prefix,
    deployment,
    extraWorkers,
    redis,
    async close() {
      redis.disconnect();
      await deployment.close(extraWorkers);
    },
  };
}

/** Embedded (`npm start`): web + worker in one process, the only way a ram store is shared by API and worker. */
export async function startEmbedded(label: string, env: Record<string, string>): Promise<Cluster> {
  const prefix = uniquePrefix(label);
  const { startWeb } = await import('../../reliability/fixtures/processes.js');
  const web = await startWeb({
    label,
    redisUrl: TEST_REDIS_URL,
    prefix,
    env: { API_TOKENS: TOKEN, DISK_FSYNC: 'false', WAIT_TIMEOUT_MS: '20000', JOB_ATTEMPTS: '3', ...env },
  });
  // startWeb runs `web`; replace it by `embedded` on the same env and port.
  await web.web.kill();
  const embedded = serviceProcess('embedded', web.env);
  await embedded.start();
  const redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 2 });
  return {
    base: web.base,
    prefix,
    deployment: { ...web, worker: embedded },
    extraWorkers: [],
    redis,
    async close() {
      redis.disconnect();
      await web.close([embedded]);
    },
  };
}

export interface Content {
  n: number;
  prev: string | null;
  client: string;
  i: number;
}

export function objectUrl(base: string, store: string, key: string): string {
  return `${base}/v1/stores/${store}/objects/${key.split('/').map(encodeURIComponent).join('/')}`;
}

export interface Read {
  status: number;
  etag?: string;
  content?: Content;
  raw?: string;
}

export async function getObject(base: string, store: string, key: string): Promise<Read> {
  const response = await fetch(objectUrl(base, store, key), { headers: AUTH });
  if (response.status !== 200) {
    await response.body?.cancel();
    return { status: response.status };
  }
  const raw = await response.text();
  const etag = response.headers.get('etag')!.replace(/"/g, '');
  return { status: 200, etag, raw, content: JSON.parse(raw) as Content };
}

export type Outcome = { kind: 'ok'; etag: string; info: Record<string, unknown> } | { kind: '412' } | { kind: 'other'; status: number; text: string };

/** PUT (or POST .../versions with `version`) with ?wait=true; a 202 (wait timed out) is polled to its end. */
export async function conditionalWrite(
  base: string,
  store: string,
  key: string,
  body: string,
  headers: Record<string, string>,
  { version = false }: { version?: boolean } = {},
): Promise<Outcome> {
  const url = version ? `${objectUrl(base, store, key)}/versions?wait=true` : `${objectUrl(base, store, key)}?wait=true`;
  const response = await fetch(url, {
    method: version ? 'POST' : 'PUT',
    body,
    headers: { ...AUTH, 'Content-Type': 'application/json', ...headers, ...(version ? { 'X-Version-Message': 'cas version' } : {}) },
  });
  const text = await response.text();
  if (response.status === 200) {
    const info = JSON.parse(text) as Record<string, unknown>;
    return { kind: 'ok', etag: String(info.etag), info };
  }
  if (response.status === 412) return { kind: '412' };
  if (response.status === 202) {
    const { jobId } = JSON.parse(text) as { jobId: string };
    for (let k = 0; k < 600; k++) {
      await sleep(100);
      const status = (await (await fetch(`${base}/v1/jobs/${jobId}`, { headers: AUTH })).json()) as {
        state: string;
        result?: Record<string, unknown>;
        failedReason?: string;
      };
      if (status.state === 'completed') return { kind: 'ok', etag: String(status.result!.etag), info: status.result! };
      if (status.state === 'failed') {
        if (status.failedReason?.startsWith('PRECONDITION_FAILED')) return { kind: '412' };
        return { kind: 'other', status: 0, text: `job failed: ${status.failedReason}` };
      }
    }
    return { kind: 'other', status: 202, text: `job ${jobId} never finished` };
  }
  return { kind: 'other', status: response.status, text };
}

export interface CasRun {
  successes: { etag: string; content: Content; version: boolean }[];
  failures412: number;
  others: string[];
  /** etag -> raw content, for every GET and every successful write. */
  seen: Map<string, Set<string>>;
  readMismatches: string[];
}

function note(seen: Map<string, Set<string>>, etag: string, raw: string) {
  let set = seen.get(etag);
  if (!set) seen.set(etag, (set = new Set()));
  set.add(raw);
}

/**
 * `clients` loops of GET, then PUT If-Match (a share `versionShare` of them POST .../versions If-Match instead). A 404
 * (after a delete) makes the client create with If-None-Match: *.
 */
export async function runCas(
  base: string,
  store: string,
  key: string,
  { clients, iterations, versionShare = 0 }: { clients: number; iterations: number; versionShare?: number },
): Promise<CasRun> {
  const run: CasRun = { successes: [], failures412: 0, others: [], seen: new Map(), readMismatches: [] };
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      for (let i = 0; i < iterations; i++) {
        const read = await getObject(base, store, key);
        let headers: Record<string, string>;
        let content: Content;
        if (read.status === 200) {
          if (sha(read.raw!) !== read.etag) run.readMismatches.push(`GET etag ${read.etag} with content of ${sha(read.raw!)}`);
          note(run.seen, read.etag!, read.raw!);
          content = { n: read.content!.n + 1, prev: read.etag!, client: `c${c}`, i };
          headers = { 'If-Match': `"${read.etag}"` };
        } else if (read.status === 404) {
          content = { n: 0, prev: null, client: `c${c}`, i };
          headers = { 'If-None-Match': '*' };
        } else {
          run.others.push(`GET ${read.status}`);
          continue;
        }
        const raw = JSON.stringify(content);
        const version = versionShare > 0 && (c * iterations + i) % Math.round(1 / versionShare) === 0;
        const outcome = await conditionalWrite(base, store, key, raw, headers, { version });
        if (outcome.kind === 'ok') {
          if (outcome.etag !== sha(raw)) run.others.push(`write answered etag ${outcome.etag}, content hashes to ${sha(raw)}`);
          note(run.seen, outcome.etag, raw);
          run.successes.push({ etag: outcome.etag, content, version });
        } else if (outcome.kind === '412') run.failures412++;
        else run.others.push(`${outcome.status} ${outcome.text.slice(0, 300)}`);
      }
    }),
  );
  return run;
}

/** Problems with the chain of successful writes from `seedEtag`; [] when it is one linear history. */
export function chainProblems(run: CasRun, seedEtag: string, final: Read): string[] {
  const problems: string[] = [];
  const byPrev = new Map<string, CasRun['successes']>();
  for (const s of run.successes) {
    const prev = s.content.prev ?? 'none';
    byPrev.set(prev, [...(byPrev.get(prev) ?? []), s]);
  }
  for (const [prev, list] of byPrev) {
    if (list.length > 1) {
      problems.push(`${list.length} successful writes replaced ${prev.slice(0, 12)}: ${list.map((s) => `${s.content.client}/${s.content.i}(n=${s.content.n}${s.version ? ',version' : ''})`).join(' ')}`);
    }
  }
  for (const [etag, raws] of run.seen) if (raws.size > 1) problems.push(`etag ${etag.slice(0, 12)} seen with ${raws.size} contents`);
  for (const [etag, raws] of run.seen) for (const raw of raws) if (sha(raw) !== etag) problems.push(`etag ${etag.slice(0, 12)} for content hashing to ${sha(raw).slice(0, 12)}`);
  // Walk the chain from the seed.
  let at = seedEtag;
  let length = 0;
  const visited = new Set<string>();
  for (;;) {
    const next = byPrev.get(at);
    if (!next || next.length === 0) break;
    if (visited.has(at)) {
      problems.push('cycle');
      break;
    }
    visited.add(at);
    at = next[0]!.etag;
    length++;
  }
  if (length !== run.successes.length && !run.successes.some((s) => s.content.prev === null)) {
    problems.push(`chain from the seed covers ${length} of ${run.successes.length} successes`);
  }
  if (final.status === 200 && !run.successes.some((s) => s.content.prev === null)) {
    if (final.content!.n !== run.successes.length) problems.push(`final counter ${final.content!.n}, successes ${run.successes.length}`);
    if (final.etag !== at) problems.push(`final etag ${final.etag?.slice(0, 12)} is not the chain's end ${at.slice(0, 12)}`);
  }
  return problems;
}

export interface StreamEvent {
  id: string;
  type: string;
  key?: string;
  store?: string;
  jobId?: string;
  data: Record<string, unknown>;
}

export async function streamEvents(redis: Redis, prefix: string): Promise<StreamEvent[]> {
  const found: StreamEvent[] = [];
  let start = '-';
  for (;;) {
    const entries = (await redis.xrange(`${prefix}:events`, start, '+', 'COUNT', 1000)) as [string, string[]][];
    for (const [id, fields] of entries) {
      const event = JSON.parse(fields[fields.indexOf('e') + 1]!) as Omit<StreamEvent, 'id'>;
      found.push({ id, ...event });
    }
    if (entries.length < 1000) return found;
    start = `(${entries[entries.length - 1]![0]}`;
  }
}

/** Seeds `key` with n=0 and returns its etag. */
export async function seed(base: string, store: string, key: string): Promise<string> {
  const raw = JSON.stringify({ n: 0, prev: null, client: 'seed', i: 0 } satisfies Content);
  const outcome = await conditionalWrite(base, store, key, raw, {});
  if (outcome.kind !== 'ok') throw new Error(`seed failed: ${JSON.stringify(outcome)}`);
  return outcome.etag;
}

export async function listAllVersions(base: string, store: string, key: string): Promise<{ versionId: string; etag: string; message?: string }[]> {
  const all: { versionId: string; etag: string; message?: string }[] = [];
  let cursor: string | undefined;
  do {
    const response = await fetch(`${objectUrl(base, store, key)}/versions?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, { headers: AUTH });
    const page = (await response.json()) as { items: { versionId: string; etag: string; message?: string }[]; cursor?: string };
    all.push(...page.items);
    cursor = page.cursor;
  } while (cursor);
  return all;
}

/** N concurrent create-only PUTs of one key per round: how many won. */
export async function createRaces(base: string, store: string, { rounds, racers }: { rounds: number; racers: number }): Promise<{ winners: number[]; others: string[] }> {
  const winners: number[] = [];
  const others: string[] = [];
  for (let r = 0; r < rounds; r++) {
    const key = `create/${r}`;
    const outcomes = await Promise.all(
      Array.from({ length: racers }, (_, c) => conditionalWrite(base, store, key, JSON.stringify({ n: 0, prev: null, client: `c${c}`, i: r }), { 'If-None-Match': '*' })),
    );
    winners.push(outcomes.filter((o) => o.kind === 'ok').length);
    for (const o of outcomes) if (o.kind === 'other') others.push(`${o.status} ${o.text.slice(0, 200)}`);
  }
  return { winners, others };
}

/** Reads `/v1/events?types=...&since=0` over SSE until `count` events of `key` arrived (or `timeoutMs`). */
export async function sseEvents(base: string, types: string, key: string, count: number, timeoutMs = 15_000): Promise<StreamEvent[]> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  const got: StreamEvent[] = [];
  try {
    const response = await fetch(`${base}/v1/events?types=${types}&since=0`, { headers: { ...AUTH, Accept: 'text/event-stream' }, signal: controller.signal });
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let at: number;
      while ((at = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, at);
        buffer = buffer.slice(at + 2);
        const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
        const id = block.split('\n').find((l) => l.startsWith('id:'))?.slice(3).trim();
        if (!data) continue;
        const event = JSON.parse(data) as StreamEvent;
        if (event.key === key) got.push({ ...event, id: id ?? event.id });
        if (got.length >= count) return got;
      }
    }
  } catch (error) {
    if (!controller.signal.aborted) throw error;
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
  return got;
}

/**
 * Replays the key's events in stream order (valid when one worker process runs the jobs: the README promises the
 * events of one key leave in the order the mutations took effect): each object.written must replace what the
 * previous event left (its `prev`), each successful write must appear once.
 */
export function replayProblems(events: StreamEvent[], run: CasRun, seedEtag: string): string[] {
  const problems: string[] = [];
  const contentOf = new Map<string, Content>(run.successes.map((s) => [s.etag, s.content]));
  let state: string | null = null;
  const written = new Map<string, number>();
  for (const e of events) {
    if (e.type === 'object.deleted') {
      state = null;
      continue;
    }
    if (e.type !== 'object.written' && e.type !== 'version.created') continue;
    const etag = String(e.data.etag);
    written.set(etag, (written.get(etag) ?? 0) + 1);
    if (etag === seedEtag && state === null) {
      state = etag;
      continue;
    }
    const content = contentOf.get(etag);
    if (!content) {
      problems.push(`event ${e.id} ${e.type} of etag ${etag.slice(0, 12)} no client saw succeed`);
      state = etag;
      continue;
    }
    if (content.prev !== state) problems.push(`event ${e.id} ${e.type}: ${content.client}/${content.i} replaced ${String(content.prev).slice(0, 12)} but the state was ${String(state).slice(0, 12)}`);
    state = etag;
  }
  for (const s of run.successes) if (written.get(s.etag) !== 1) problems.push(`success ${s.content.client}/${s.content.i} has ${written.get(s.etag) ?? 0} events`);
  return problems;
}

/** Clients CAS while one client DELETEs the key every `everyMs`, `deletes` times. */
export async function casWithDeletes(
  base: string,
  store: string,
  key: string,
  { clients, iterations, deletes, everyMs }: { clients: number; iterations: number; deletes: number; everyMs: number },
): Promise<{ run: CasRun; deleted: number; deleteOthers: string[] }> {
  let deleted = 0;
  const deleteOthers: string[] = [];
  const deleter = (async () => {
    for (let d = 0; d < deletes; d++) {
      await sleep(everyMs);
      const response = await fetch(`${objectUrl(base, store, key)}?wait=true`, { method: 'DELETE', headers: AUTH });
      const text = await response.text();
      if (response.status === 200) deleted++;
      else deleteOthers.push(`${response.status} ${text.slice(0, 200)}`);
    }
  })();
  const [run] = await Promise.all([runCas(base, store, key, { clients, iterations }), deleter]);
  return { run, deleted, deleteOthers };
}
