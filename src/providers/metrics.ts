/**
 * The metrics layer: wraps any provider and counts every operation, its errors and its latency, so providers
 * never time themselves. `stats()` of the wrapped provider gains `ops`; an optional `observe` hook feeds an
 * outside registry (the API's prom-client histograms) without providers depending on it.
 */
import { isStorageError } from './errors.js';
import { isFenceError } from './fence.js';
import type { LatencySummary, ProviderStats, StorageProvider } from './types.js';

const MEASURED = [
  'write',
  'read',
  'stat',
  'delete',
  'list',
  'listKeys',
  'createVersion',
  'listVersions',
  'restoreVersion',
  'presign',
] as const;
type MeasuredOp = (typeof MEASURED)[number];

/** Latency reservoir size per operation: recent enough to follow change, large enough for a stable p99. */
const SAMPLES = 1024;

export interface Observation {
  op: MeasuredOp;
  seconds: number;
  /** The error code when the operation failed (`UNKNOWN` for errors outside the contract). */
  errorCode?: string;
}

class OpCounter {
  count = 0;
  errors = 0;
  private readonly samples = new Float64Array(SAMPLES);
  private next = 0;

  record(ms: number, failed: boolean): void {
    this.count++;
    if (failed) this.errors++;
    this.samples[this.next % SAMPLES] = ms;
    this.next++;
  }

  summary(): LatencySummary {
    const filled = Array.from(this.samples.subarray(0, Math.min(this.next, SAMPLES))).sort((a, b) => a - b);
    const at = (p: number) => (filled.length === 0 ? 0 : filled[Math.min(filled.length - 1, Math.ceil(p * filled.length) - 1)]!);
    return { count: this.count, p50Ms: at(0.5), p99Ms: at(0.99) };
  }
}

export function withMetrics<P extends StorageProvider>(provider: P, observe?: (observation: Observation) => void): P {
  const counters = new Map<MeasuredOp, OpCounter>(MEASURED.map((op) => [op, new OpCounter()]));

  const measured = (op: MeasuredOp, fn: (...args: unknown[]) => Promise<unknown>) =>
    async function (this: unknown, ...args: unknown[]) {
      const start = performance.now();
      let errorCode: string | undefined;
      try {
        return await fn.apply(provider, args);
      } catch (error) {
        // A fence's refusal is its caller's decision, not a failure of the store.
        if (!isFenceError(error)) errorCode = isStorageError(error) ? error.code : 'UNKNOWN';
        throw error;
      } finally {
        const ms = performance.now() - start;
        counters.get(op)!.record(ms, errorCode !== undefined);
        try {
          observe?.({ op, seconds: ms / 1000, ...(errorCode ? { errorCode } : {}) });
        } catch {
          // A metric lost; the operation's own outcome (a committed write, a NotFound) stands.
        }
      }
    };

  const stats = async (): Promise<ProviderStats> => {
    const own = await provider.stats();
    const ops: NonNullable<ProviderStats['ops']> = {};
    for (const [op, counter] of counters) {
      if (counter.count > 0) ops[op] = { count: counter.count, errors: counter.errors, latency: counter.summary() };
    }
    return { ...own, ops };
  };

  // Each method is wrapped once, not at every access; a method replaced on the provider gets a new wrapper.
  const wrappers = new Map<PropertyKey, { method: Function; wrapper: unknown }>();
  const wrap = (target: P, property: PropertyKey, method: Function): unknown => {
    const known = wrappers.get(property);
    if (known?.method === method) return known.wrapper;
    const wrapper = (MEASURED as readonly PropertyKey[]).includes(property)
      ? measured(property as MeasuredOp, method as (...args: unknown[]) => Promise<unknown>)
      : method.bind(target);
    wrappers.set(property, { method, wrapper });
    return wrapper;
  };

  // A Proxy keeps provider-specific extras (git's diff and branches, ram's snapshots) reachable through the layer.
  return new Proxy(provider, {
    get(target, property, receiver) {
      if (property === 'stats') return stats;
      const value: unknown = Reflect.get(target, property, receiver);
      return typeof value === 'function' ? wrap(target, property, value) : value;
    },
  });
}
