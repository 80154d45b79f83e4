/**
 * One resilience policy for any remote provider (s3 today): a per-attempt timeout, retries with exponential
 * backoff on retryable failures only, and a circuit breaker shared by every call of one backend.
 *
 * Every failure is turned into a contract error by the provider's `classify` before the policy looks at it, so
 * "retryable" means exactly what `errorTable` says: only `ProviderUnavailableError` (and timeouts) is retried and
 * counts towards opening the circuit; a `NotFoundError` or a precondition failure is an answer, not an outage, and
 * resets the count of consecutive failures as a success does.
 * An open circuit fails fast with `ProviderUnavailableError` without touching the backend; after
 * `halfOpenAfterMs` one call is let through as a probe, and its success closes the circuit again (a call without a
 * time limit sends the provider's short `probe` first, and is the probe only if it has none).
 *
 * Retries happen per backend request, where the request body is a replayable buffer. Calls whose body is a
 * one-shot stream (multipart uploads) pass `{ retry: false, timeoutMs: false }`: they still go through the breaker
 * (an open circuit refuses them and their failures count), but they are never replayed.
 */
import {
  CircuitState,
  ConsecutiveBreaker,
  ExponentialBackoff,
  TimeoutStrategy,
  circuitBreaker,
  TaskCancelledError,
  handleWhen,
  isBrokenCircuitError,
  retry,
  timeout,
  wrap,
  type CircuitBreakerPolicy,
  type IPolicy,
} from 'cockatiel';
import { MisconfiguredBackendError, ProviderUnavailableError, StorageError } from './errors.js';

export type CircuitStateName = 'closed' | 'open' | 'half-open' | 'isolated';

export interface ResilienceOptions {
  /** Names the backend in error messages, e.g. `s3 bucket "media"`. */
  name: string;
  /**
   * Turns any failure of the backend into a contract error (its `retryable` decides retries and the breaker). A
   * failure that is not the backend's may come back as it is: like an answer, it is neither retried nor counted.
   */
  classify(error: unknown): unknown;
  /** Per attempt. Default 10 s. */
  timeoutMs?: number;
  /** Retries after the first attempt. Default 3. */
  retries?: number;
  /** First backoff delay; grows exponentially with decorrelated jitter. Default 100 ms. */
  initialDelayMs?: number;
  /** Default 2 s. */
  maxDelayMs?: number;
  /** Consecutive retryable failures that open the circuit. Default 5. */
  breakAfter?: number;
  /** How long an open circuit fails fast before letting one probe through. Default 10 s. */
  halfOpenAfterMs?: number;
  /**
   * A short request to the backend (s3: HeadBucket), sent as the circuit's probe in place of a call without a time
   * limit: a slow upload made the probe would keep the circuit half-open, every other call failing fast, for as long
   * as its client takes to send it.
   */
  probe?: (signal: AbortSignal) => Promise<unknown>;
}

export interface CallOptions {
  /** Default true. Only for calls whose request can be sent again as it was (buffered bodies). */
  retry?: boolean;
  /** Per attempt; `false` for calls whose duration grows with the body (multipart uploads). */
  timeoutMs?: number | false;
}

export interface ResilienceCounters {
  calls: number;
  failures: number;
  retries: number;
  /** Attempts abandoned for taking longer than the timeout. */
  timeouts: number;
  /** Calls refused at once because the circuit was open. */
  shortCircuited: number;
  /** Times the circuit opened. */
  opened: number;
}

export interface ResiliencePolicy {
  readonly name: string;
  /** Runs `fn` (which should hand `signal` to its request so a timed-out attempt is abandoned). */
  execute<T>(fn: (signal: AbortSignal) => Promise<T>, opts?: CallOptions): Promise<T>;
  readonly state: CircuitStateName;
  /** Called on every circuit transition; returns an unsubscribe function. */
  onStateChange(listener: (state: CircuitStateName) => void): () => void;
  readonly counters: Readonly<ResilienceCounters>;
}

const STATE_NAMES: Record<CircuitState, CircuitStateName> = {
  [CircuitState.Closed]: 'closed',
  [CircuitState.Open]: 'open',
  [CircuitState.HalfOpen]: 'half-open',
  [CircuitState.Isolated]: 'isolated',
};

// Not cockatiel's isTaskCancelledError: in 3.2.1 it tests for the bulkhead's marker and never matches.
function isTimeout(error: unknown): boolean {
  return error instanceof TaskCancelledError;
}

function isRetryable(error: unknown): boolean {
  return (error instanceof StorageError && error.retryable && !(error instanceof MisconfiguredBackendError)) || isTimeout(error);
}

/** A failure that is not retried (an answer such as NOT_FOUND), carried through the breaker as a success. */
class Answered {
  constructor(readonly error: unknown) {}
}

export function createResiliencePolicy(options: ResilienceOptions): ResiliencePolicy {
  const {
    name,
    classify,
    timeoutMs = 10_000,
    retries = 3,
    initialDelayMs = 100,
    maxDelayMs = 2_000,
    breakAfter = 5,
    halfOpenAfterMs = 10_000,
  } = options;
  const retryable = handleWhen(isRetryable);
  const counters: ResilienceCounters = { calls: 0, failures: 0, retries: 0, timeouts: 0, shortCircuited: 0, opened: 0 };

  const breaker: CircuitBreakerPolicy = circuitBreaker(retryable, {
    halfOpenAfter: halfOpenAfterMs,
    breaker: new ConsecutiveBreaker(breakAfter),
  });
  breaker.onBreak(() => counters.opened++);

  const retryPolicy = retry(retryable, {
    maxAttempts: retries,
    backoff: new ExponentialBackoff({ initialDelay: initialDelayMs, maxDelay: maxDelayMs }),
  });
  retryPolicy.onRetry(() => counters.retries++);

  // Composed on first use per (retry, timeout) shape; every shape shares the one breaker.
  const composed = new Map<string, IPolicy>();
  function policyFor(opts: CallOptions | undefined): { policy: IPolicy; timeoutMs: number | false } {
    const withRetry = opts?.retry ?? true;
    const ms = opts?.timeoutMs ?? timeoutMs;
    const id = `${withRetry}:${ms}`;
    let policy = composed.get(id);
    if (!policy) {
      const layers: IPolicy[] = [];
      if (withRetry) layers.push(retryPolicy);
      layers.push(breaker);
      // abortOnReturn: false keeps a streamed response body alive after the call that opened it has returned.
      if (ms !== false) {
        const attemptTimeout = timeout(ms, { strategy: TimeoutStrategy.Aggressive, abortOnReturn: false });
        attemptTimeout.onTimeout(() => counters.timeouts++);
        layers.push(attemptTimeout);
      }
      policy = layers.length === 1 ? layers[0]! : wrap(...(layers as [IPolicy, IPolicy]));
      composed.set(id, policy);
    }
    return { policy, timeoutMs: ms };
  }

  const resilience: ResiliencePolicy = {
    name,
    get state() {
      return STATE_NAMES[breaker.state];
    },
    get counters() {
      return { ...counters };
    },
    onStateChange(listener) {
      const subscription = breaker.onStateChange((state) => listener(STATE_NAMES[state]));
      return () => subscription.dispose();
    },
    async execute<T>(fn: (signal: AbortSignal) => Promise<T>, opts?: CallOptions): Promise<T> {
      const { policy, timeoutMs: ms } = policyFor(opts);
      if (ms === false && breaker.state !== CircuitState.Closed && options.probe !== undefined) {
        // Any answer (a 403 of a key that may not HeadBucket) is the backend up: only an outage stops the call.
        await resilience.execute(options.probe).catch((error: unknown) => {
          if (isRetryable(error)) throw error;
        });
      }
      counters.calls++;
      if (breaker.state === CircuitState.HalfOpen) {
        // One call probes the backend; cockatiel would make every other wait for it, unbounded by any timeout (the
        // probe may be a long upload): they fail fast instead, as while the circuit is open.
        counters.failures++;
        counters.shortCircuited++;
        throw new ProviderUnavailableError(`${name}: circuit half-open, a trial call is under way; failing fast`);
      }
      // cockatiel derives each attempt's signal from the one passed here, by default one signal shared by every
      // call: more than ten calls in flight would then look like a listener leak to Node. Each call gets its own.
      const result = await policy
        .execute(async ({ signal }) => {
          try {
            return await fn(signal);
          } catch (error) {
            // The request failed because the timeout aborted it (an AbortError): say so.
            if (signal.aborted && ms !== false) throw new ProviderUnavailableError(`${name}: no answer within ${ms} ms`, { cause: error });
            const classified = classify(error);
            if (isRetryable(classified)) throw classified;
            // Returned, not thrown: cockatiel records nothing for an error it does not handle, so answers such as
            // 404 would never reset its count of consecutive failures. An answer is the backend working.
            return new Answered(classified);
          }
        }, new AbortController().signal)
        .catch((error: unknown) => {
          counters.failures++;
          if (isBrokenCircuitError(error)) {
            counters.shortCircuited++;
            throw new ProviderUnavailableError(`${name}: circuit open after repeated failures, failing fast`, { cause: error });
          }
          if (isTimeout(error)) {
            throw new ProviderUnavailableError(`${name}: no answer within ${ms} ms`, { cause: error });
          }
          throw error instanceof StorageError ? error : classify(error);
        });
      if (result instanceof Answered) {
        counters.failures++;
        throw result.error;
      }
      return result as T;
    },
  };
  return resilience;
}
