/** The CAS checks of `cas-support.ts` as one suite, run against a deployment of one store. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  casWithDeletes,
  chainProblems,
  createRaces,
  getObject,
  listAllVersions,
  replayProblems,
  runCas,
  seed,
  sseEvents,
  streamEvents,
  type Cluster,
} from './cas-support.js';

export interface SuiteOptions {
  name: string;
  store: string;
  start(): Promise<Cluster>;
  /** One worker process: events of a key follow the order of its mutations. */
  ordered: boolean;
  /** Every write is a version (git, native s3). */
  everyWrite: boolean;
  clients?: number;
  iterations?: number;
  /** Why the suite cannot run here (printed by the caller); it is then skipped. */
  skipReason?: string;
}

export function casSuite(o: SuiteOptions): void {
  if (o.skipReason !== undefined) {
    describe.skip(`${o.name}: conditional writes through the service (${o.skipReason})`, () => {
      it('runs where its S3 server is', () => undefined);
    });
    return;
  }
  const CLIENTS = o.clients ?? 8;
  const ITERATIONS = Number(process.env.CAS_ITER ?? o.iterations ?? 12);
  let cluster: Cluster;
  const log = (text: string) => console.log(`[cas ${o.name}] ${text}`);

  beforeAll(async () => {
    cluster = await o.start();
  }, 120_000);
  afterAll(async () => {
    await cluster?.close();
  }, 60_000);

  describe(`${o.name}: conditional writes through the service`, () => {
    it('If-Match CAS: one linear history, one object.written per success (stream and SSE)', async () => {
      const { base } = cluster;
      const key = 'cas/plain';
      const seedEtag = await seed(base, o.store, key);
      const run = await runCas(base, o.store, key, { clients: CLIENTS, iterations: ITERATIONS });
      const final = await getObject(base, o.store, key);
      log(`plain ${CLIENTS}x${ITERATIONS}: ${run.successes.length} ok, ${run.failures412} x 412, others ${run.others.length}, final n=${final.content?.n}`);
      const written = (await streamEvents(cluster.redis, cluster.prefix)).filter((e) => e.type === 'object.written' && e.key === key);
      const problems = {
        others: run.others,
        readMismatches: run.readMismatches,
        chain: chainProblems(run, seedEtag, final),
        eventCount: written.length === run.successes.length + 1 ? [] : [`${written.length} events for ${run.successes.length + 1} writes`],
        replay: o.ordered ? replayProblems(written, run, seedEtag) : [],
      };
      const sse = await sseEvents(base, 'object.written', key, written.length);
      const sseProblems = sse.map((e) => e.id).join() === written.map((e) => e.id).join() ? [] : [`SSE ids differ from the stream: ${sse.length} vs ${written.length}`];
      expect({ ...problems, sse: sseProblems }).toEqual({ others: [], readMismatches: [], chain: [], eventCount: [], replay: [], sse: [] });
      expect(run.successes.length + run.failures412).toBe(CLIENTS * ITERATIONS);
    });

    it('If-Match CAS mixing PUTs and version jobs: one history; versions listed one per version (every write on every-write stores)', async () => {
      const { base } = cluster;
      const key = 'cas/mixed';
      const seedEtag = await seed(base, o.store, key);
      const run = await runCas(base, o.store, key, { clients: CLIENTS, iterations: ITERATIONS, versionShare: 0.25 });
      const final = await getObject(base, o.store, key);
      const versionOk = run.successes.filter((s) => s.version);
      log(`versions ${CLIENTS}x${ITERATIONS}: ${run.successes.length} ok (${versionOk.length} versions), ${run.failures412} x 412, others ${run.others.length}`);
      const events = (await streamEvents(cluster.redis, cluster.prefix)).filter((e) => e.key === key && (e.type === 'object.written' || e.type === 'version.created'));
      const versions = await listAllVersions(base, o.store, key);
      // Expected version list, newest first.
      const chain: string[] = [seedEtag];
      const byPrev = new Map(run.successes.map((s) => [s.content.prev, s]));
      for (let at = byPrev.get(seedEtag); at; at = byPrev.get(at.etag)) chain.push(at.etag);
      const versionEtags = new Set(versionOk.map((s) => s.etag));
      const expected = (o.everyWrite ? chain : chain.filter((e) => versionEtags.has(e))).reverse();
      expect({
        others: run.others,
        chain: chainProblems(run, seedEtag, final),
        events: events.length === run.successes.length + 1 ? [] : [`${events.length} events for ${run.successes.length + 1}`],
        replay: o.ordered ? replayProblems(events, run, seedEtag) : [],
        versions: versions.map((v) => v.etag.slice(0, 12)),
      }).toEqual({ others: [], chain: [], events: [], replay: [], versions: expected.map((e) => e.slice(0, 12)) });
    });

    it('If-None-Match: * — exactly one of 8 concurrent creators wins each round', async () => {
      const { winners, others } = await createRaces(cluster.base, o.store, { rounds: 8, racers: 8 });
      log(`create races: ${JSON.stringify(winners)}`);
      expect({ others, winners }).toEqual({ others: [], winners: winners.map(() => 1) });
    });

    it('DELETE racing conditional PUTs: no write lands on a deleted object through If-Match', async () => {
      const { base } = cluster;
      const key = 'cas/deletes';
      const seedEtag = await seed(base, o.store, key);
      const { run, deleted, deleteOthers } = await casWithDeletes(base, o.store, key, { clients: 6, iterations: ITERATIONS, deletes: 8, everyMs: 150 });
      const creations = run.successes.filter((s) => s.content.prev === null).length;
      log(`deletes: ${run.successes.length} ok (${creations} creations), ${run.failures412} x 412, ${deleted} deletes, others ${run.others.length}`);
      const events = (await streamEvents(cluster.redis, cluster.prefix)).filter((e) => e.key === key && (e.type === 'object.written' || e.type === 'object.deleted'));
      const dupes = chainProblems(run, seedEtag, { status: 404 }).filter((p) => p.includes('successful writes replaced') && !p.includes('replaced none'));
      expect({
        others: run.others,
        deleteOthers,
        dupes,
        replay: o.ordered ? replayProblems(events, run, seedEtag) : [],
      }).toEqual({ others: [], deleteOthers: [], dupes: [], replay: [] });
    });
  });
}
