/**
 * Fences (`Fenced` in types.ts): a provider awaits a mutation's fence with `passFence` right before the step that
 * makes the mutation visible. A fence that refuses throws its own error, which must reach the caller as it is —
 * but providers map failures inside their operations to the contract's errors. `passFence` remembers what its
 * fence threw, and a provider's mapping hands such an error back untouched (`isFenceError`).
 */
import type { Fenced } from './types.js';

const fenceErrors = new WeakSet<object>();

/** Awaits `opts.fence`, if any. What it throws is passed on, marked as the fence's. */
export async function passFence(opts: Fenced | undefined): Promise<void> {
  if (opts?.fence === undefined) return;
  try {
    await opts.fence();
  } catch (error) {
    const thrown = typeof error === 'object' && error !== null ? error : new Error(String(error));
    fenceErrors.add(thrown);
    throw thrown;
  }
}

/** `error` came from a mutation's fence: the caller's own, not the store's to map. */
export function isFenceError(error: unknown): boolean {
  return typeof error === 'object' && error !== null && fenceErrors.has(error);
}
