/**
 * The resilience policy every remote provider shares: which failures are retried, when the circuit opens, how an
 * open circuit answers, and how it closes again. Backends here are plain functions that fail on cue.
 */
import { isBrokenCircuitError } from 'cockatiel';
import { describe, expect, it } from 'vitest';
import { NotFoundError, PermissionDeniedError, ProviderUnavailableError, StorageError } from '../../src/providers/errors.js';
import { createResiliencePolicy, type ResilienceOptions } from '../../src/providers/resilience.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function policy(overrides: Partial<ResilienceOptions> = {}) {
  return createResiliencePolicy({
    name: 'test backend',
    classify: (error) => (error instanceof StorageError ? error : new ProviderUnavailableError('raw failure', { cause: error })),
    initialDelayMs: 1,
    maxDelayMs: 5,
    retries: 3,
    breakAfter: 3,
    halfOpenAfterMs: 100,
    ...overrides,
  });
}

const unavailable = () => new ProviderUnavailableError('backend down');

describe('resilience policy', () => {
  it('sends its short probe before a call without a time limit on an open circuit: a slow upload holds nothing up (session 11)', async () => {
    let probes = 0;
    let backendUp = false;
    const p = policy({ retries: 0, breakAfter: 2, probe: async () => (probes++, backendUp ? 'ok' : Promise.reject(unavailable())) });
    for (let i = 0; i < 2; i++) await expect(p.execute(async () => Promise.reject(unavailable()))).rejects.toBeInstanceOf(ProviderUnavailableError);
    expect(p.state).toBe('open');
    await sleep(150);
    // Still down: the probe fails, the upload is not sent.
    let sent = 0;
    await expect(p.execute(async () => sent++, { retry: false, timeoutMs: false })).rejects.toBeInstanceOf(ProviderUnavailableError);
    expect(sent).toBe(0);
    backendUp = true;
    await sleep(150);
    let finishUpload!: () => void;
    const upload = p.execute(() => new Promise<string>((resolve) => (finishUpload = () => resolve('uploaded'))), { retry: false, timeoutMs: false });
    await sleep(20);
    // The probe closed the circuit: other calls go through while the upload is still being sent.
    expect(p.state).toBe('closed');
    expect(await p.execute(async () => 'stat')).toBe('stat');
    finishUpload();
    expect(await upload).toBe('uploaded');
    expect(probes).toBe(2);
  });

  it('takes any answer of the probe (a 403 of a key that may not HeadBucket) for the backend up, and sends the call', async () => {
    let down = true;
    const p = policy({ retries: 0, breakAfter: 2, probe: async () => Promise.reject(down ? unavailable() : new PermissionDeniedError('HeadBucket: 403')) });
    for (let i = 0; i < 2; i++) await expect(p.execute(async () => Promise.reject(unavailable()))).rejects.toBeInstanceOf(ProviderUnavailableError);
    down = false;
    await sleep(150);
    expect(await p.execute(async () => 'uploaded', { retry: false, timeoutMs: false })).toBe('uploaded');
    expect(p.state).toBe('closed');
  });

  it('retries a retryable failure and returns the answer that follows', async () => {
    const p = policy({ breakAfter: 10 });
    let calls = 0;
    const result = await p.execute(async () => {
      calls++;
      if (calls < 3) throw unavailable();
      return 'ok';
    });
    expect(result).toBe('ok');
    expect(calls).toBe(3);
    expect(p.counters.retries).toBe(2);
  });

  it('does not retry an answer such as NotFound, and answers never open the circuit', async () => {
    const p = policy();
    let calls = 0;
    for (let i = 0; i < 5; i++) {
      await expect(
        p.execute(async () => {
          calls++;
          throw new NotFoundError('no such key');
        }),
      ).rejects.toBeInstanceOf(NotFoundError);
    }
    expect(calls).toBe(5);
    expect(p.state).toBe('closed');
  });

  it('an answer such as NotFound between failures resets the count of consecutive failures', async () => {
    const p = policy({ retries: 0, breakAfter: 3, halfOpenAfterMs: 60_000 });
    const failing = async () => Promise.reject(unavailable());
    const notFound = async () => Promise.reject(new NotFoundError('no such key'));
    for (let i = 0; i < 2; i++) await expect(p.execute(failing)).rejects.toBeInstanceOf(ProviderUnavailableError);
    await expect(p.execute(notFound)).rejects.toBeInstanceOf(NotFoundError);
    for (let i = 0; i < 2; i++) await expect(p.execute(failing)).rejects.toBeInstanceOf(ProviderUnavailableError);
    expect(p.state).toBe('closed');
    expect(p.counters.failures).toBe(5);
  });

  it('gives up after the configured retries with ProviderUnavailableError', async () => {
    const p = policy({ retries: 2, breakAfter: 100 });
    let calls = 0;
    await expect(
      p.execute(async () => {
        calls++;
        throw unavailable();
      }),
    ).rejects.toBeInstanceOf(ProviderUnavailableError);
    expect(calls).toBe(3);
  });

  it('classifies raw failures before deciding', async () => {
    const p = policy({ retries: 1, breakAfter: 100 });
    let calls = 0;
    const error = await p
      .execute(async () => {
        calls++;
        throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ProviderUnavailableError);
    expect((error as Error).cause).toMatchObject({ code: 'ECONNREFUSED' });
    expect(calls).toBe(2);
  });

  it('opens after consecutive failures and then fails fast without calling the backend', async () => {
    const p = policy({ retries: 0, breakAfter: 3, halfOpenAfterMs: 60_000 });
    let calls = 0;
    const failing = async () => {
      calls++;
      throw unavailable();
    };
    for (let i = 0; i < 3; i++) await expect(p.execute(failing)).rejects.toBeInstanceOf(ProviderUnavailableError);
    expect(p.state).toBe('open');
    expect(p.counters.opened).toBe(1);

    const error = await p.execute(failing).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ProviderUnavailableError);
    expect(isBrokenCircuitError((error as Error).cause)).toBe(true);
    expect(calls).toBe(3);
    expect(p.counters.shortCircuited).toBe(1);
  });

  it('lets one probe through after halfOpenAfter, closes on its success, and reports every transition', async () => {
    const p = policy({ retries: 0, breakAfter: 2, halfOpenAfterMs: 50 });
    const states: string[] = [];
    const unsubscribe = p.onStateChange((state) => states.push(state));
    for (let i = 0; i < 2; i++) await expect(p.execute(async () => Promise.reject(unavailable()))).rejects.toThrow();
    expect(p.state).toBe('open');
    await sleep(80);
    expect(await p.execute(async () => 'probe answered')).toBe('probe answered');
    expect(p.state).toBe('closed');
    expect(states).toEqual(['open', 'half-open', 'closed']);
    unsubscribe();
  });

  it('while a long probe is out (half-open), other calls fail fast instead of waiting for it', async () => {
    const p = policy({ retries: 0, breakAfter: 2, halfOpenAfterMs: 20, timeoutMs: 200 });
    for (let i = 0; i < 2; i++) await p.execute(async () => Promise.reject(unavailable())).catch(() => undefined);
    await sleep(40);
    let finishProbe!: () => void;
    const probe = p.execute(() => new Promise<string>((resolve) => (finishProbe = () => resolve('uploaded'))), { timeoutMs: false });
    expect(p.state).toBe('half-open');
    const started = performance.now();
    let called = false;
    await expect(p.execute(async () => ((called = true), 'stat'))).rejects.toBeInstanceOf(ProviderUnavailableError);
    expect(performance.now() - started).toBeLessThan(100);
    expect(called).toBe(false);
    finishProbe();
    expect(await probe).toBe('uploaded');
    expect(p.state).toBe('closed');
    expect(await p.execute(async () => 'stat')).toBe('stat');
  });

  it('abandons an attempt that outlives the timeout, aborting its signal, as ProviderUnavailableError', async () => {
    const p = policy({ timeoutMs: 20, retries: 0 });
    let aborted = false;
    const error = await p
      .execute(
        (signal) =>
          new Promise((_resolve, reject) => {
            signal.addEventListener('abort', () => {
              aborted = true;
              reject(new Error('aborted'));
            });
          }),
      )
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ProviderUnavailableError);
    expect((error as Error).message).toMatch(/no answer within 20 ms/);
    expect(aborted).toBe(true);
    expect(p.counters.timeouts).toBe(1);
  });

  it('retries a timed-out attempt and counts timeouts towards the circuit', async () => {
    const p = policy({ timeoutMs: 10, retries: 1, breakAfter: 2, halfOpenAfterMs: 60_000 });
    let calls = 0;
    const hanging = (signal: AbortSignal) =>
      new Promise<never>((_resolve, reject) => {
        calls++;
        signal.addEventListener('abort', () => reject(new Error('aborted')));
      });
    await expect(p.execute(hanging)).rejects.toBeInstanceOf(ProviderUnavailableError);
    expect(calls).toBe(2);
    expect(p.state).toBe('open');
  });

  it('never replays a call marked retry: false, but still counts it towards the circuit', async () => {
    const p = policy({ retries: 3, breakAfter: 2, halfOpenAfterMs: 60_000 });
    let calls = 0;
    const once = async () => {
      calls++;
      throw unavailable();
    };
    await expect(p.execute(once, { retry: false, timeoutMs: false })).rejects.toBeInstanceOf(ProviderUnavailableError);
    expect(calls).toBe(1);
    await expect(p.execute(once, { retry: false, timeoutMs: false })).rejects.toBeInstanceOf(ProviderUnavailableError);
    expect(p.state).toBe('open');
  });
});
