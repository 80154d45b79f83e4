/**
 * `/metrics` (prom-client): HTTP request durations, provider operation durations and errors (fed by the provider
 * metrics layer's `observe` hook), circuit-breaker state, and queue counts by state (read from Redis when scraped).
 * One registry per app, so tests and several apps in one process never share counters.
 */
import type { Queue } from 'bullmq';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Observation } from './providers/metrics.js';
import { withTimeout } from './with-timeout.js';

export interface QueueCounts {
  name: string;
  counts(): Promise<Record<string, number>>;
  /** Worker processes' workers connected to the queue now (BullMQ names their connections: CLIENT LIST); undefined when Redis cannot tell. */
  workers(): Promise<number | undefined>;
}

/**
 * Where Redis refuses CLIENT (renamed away, or a managed Redis without it), BullMQ answers this one entry for the
 * workers it cannot list: counted, it would read as one worker exactly when none can be seen.
 */
const CLIENT_LIST_REFUSED = 'GCP does not support client list';

/**
 * The names of the workers connected to `queue` (a worker without a name of its own: `undefined`), one per
 * connection; undefined when Redis cannot tell.
 */
export async function connectedWorkers(queue: Pick<Queue, 'getWorkers'>): Promise<(string | undefined)[] | undefined> {
  const workers = await queue.getWorkers();
  if (workers.length === 1 && workers[0]!.name === CLIENT_LIST_REFUSED) return undefined;
  // BullMQ names a worker's connection `<queue's client name>:w:<worker name>` when the worker has a name.
  return workers.map((worker) => {
    const raw = String(worker.rawname ?? '');
    const at = raw.lastIndexOf(':w:');
    return at < 0 ? undefined : raw.slice(at + 3);
  });
}

/** Workers connected to `queue`, or undefined when Redis cannot tell. */
export async function workerCount(queue: Pick<Queue, 'getWorkers'>): Promise<number | undefined> {
  return (await connectedWorkers(queue))?.length;
}

/** What a scrape reads of a BullMQ queue. */
export function queueReading(queue: Pick<Queue, 'name' | 'getJobCounts' | 'getWorkers'>): QueueCounts {
  return { name: queue.name, counts: () => queue.getJobCounts(), workers: () => workerCount(queue) };
}

export interface CircuitReading {
  store: string;
  state: string;
}

/**
 * `read` of every queue, each within QUEUE_COUNT_TIMEOUT_MS: a scrape never waits on a Redis that does not answer, and
 * a queue that did not (or cannot tell) reads undefined, its series left out of that scrape (/ready says why).
 */
function readEach<T>(queues: readonly QueueCounts[], read: (queue: QueueCounts) => Promise<T | undefined>): Promise<{ name: string; value: T | undefined }[]> {
  return Promise.all(queues.map(async (queue) => ({ name: queue.name, value: await withTimeout(read(queue), QUEUE_COUNT_TIMEOUT_MS, queue.name).catch(() => undefined) })));
}

/** How long a scrape waits for one queue's counts. */
const QUEUE_COUNT_TIMEOUT_MS = 1_000;

/** The states a store's circuit breaker can be in (see providers/resilience.ts), one series each. */
const CIRCUIT_STATES = ['closed', 'open', 'half-open', 'isolated'] as const;

export class ApiMetrics {
  readonly registry = new Registry();
  private readonly http: Histogram<'method' | 'route' | 'status'>;
  /** Label sets resolved once: a route pattern has few methods and statuses, and hashing labels per request costs. */
  private readonly httpSeries = new Map<string, { observe(seconds: number): void }>();
  private readonly providerOps: Histogram<'store' | 'op' | 'outcome'>;
  private readonly providerErrors: Counter<'store' | 'op' | 'code'>;
  private queues: () => readonly QueueCounts[] = () => [];
  private circuits: () => readonly CircuitReading[] = () => [];

  constructor() {
    const queues = () => this.queues();
    const circuits = () => this.circuits();
    collectDefaultMetrics({ register: this.registry, prefix: 'kyozo_' });
    this.http = new Histogram({
      name: 'kyozo_http_request_duration_seconds',
      help: 'HTTP request durations by route pattern and status',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
      registers: [this.registry],
    });
    this.providerOps = new Histogram({
      name: 'kyozo_provider_op_duration_seconds',
      help: 'Provider operation durations by store, operation and outcome',
      labelNames: ['store', 'op', 'outcome'],
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      registers: [this.registry],
    });
    this.providerErrors = new Counter({
      name: 'kyozo_provider_errors_total',
      help: 'Provider operation errors by store, operation and error code',
      labelNames: ['store', 'op', 'code'],
      registers: [this.registry],
    });
    new Gauge({
      name: 'kyozo_queue_jobs',
      help: 'Jobs per queue and state',
      labelNames: ['queue', 'state'],
      registers: [this.registry],
      async collect() {
        // Every count read first, then the gauge replaced in one step: two scrapes at once never clear each other's series.
        const readings = await readEach(queues(), (queue) => queue.counts());
        this.reset();
        for (const { name, value } of readings) for (const [state, count] of Object.entries(value ?? {})) this.set({ queue: name, state }, count);
      },
    });
    new Gauge({
      name: 'kyozo_queue_workers',
      help: 'Workers connected to each queue: 0 means its jobs wait for a worker process',
      labelNames: ['queue'],
      registers: [this.registry],
      async collect() {
        const readings = await readEach(queues(), (queue) => queue.workers());
        this.reset();
        for (const { name, value } of readings) if (value !== undefined) this.set({ queue: name }, value);
      },
    });
    new Gauge({
      name: 'kyozo_store_circuit_state',
      help: 'Circuit breaker of a store with one (s3): 1 for its current state, 0 for the others',
      labelNames: ['store', 'state'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const { store, state } of circuits()) {
          for (const candidate of CIRCUIT_STATES) this.set({ store, state: candidate }, candidate === state ? 1 : 0);
        }
      },
    });
  }

  /** Stores whose circuit breaker state is read at scrape time. */
  watchCircuits(circuits: () => readonly CircuitReading[]): void {
    this.circuits = circuits;
  }

  /** Queues whose job counts are read at scrape time. */
  watchQueues(queues: () => readonly QueueCounts[]): void {
    this.queues = queues;
  }

  observeRequest(method: string, route: string, status: number, seconds: number): void {
    const series = `${method} ${status} ${route}`;
    let child = this.httpSeries.get(series);
    if (child === undefined) {
      child = this.http.labels({ method, route, status: String(status) });
      this.httpSeries.set(series, child);
    }
    child.observe(seconds);
  }

  observeProvider(store: string, observation: Observation): void {
    this.providerOps.observe({ store, op: observation.op, outcome: observation.errorCode ? 'error' : 'ok' }, observation.seconds);
    if (observation.errorCode) this.providerErrors.inc({ store, op: observation.op, code: observation.errorCode });
  }

  /** A gauge whose value is read at scrape time (breaker state, hot-tier bytes...). */
  addGauge(name: string, help: string, read: () => number): void {
    new Gauge({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.set(read());
      },
    });
  }
}
