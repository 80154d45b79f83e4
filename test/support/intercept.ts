/**
 * Providers with methods replaced or preceded by a hook, for tests that slow, count, fail or corrupt a store's operations: every other
 * method and property is the provider's own.
 */
import type { StorageProvider } from '../../src/providers/types.js';

type Method = (...args: never[]) => unknown;

/** `provider` with `name` replaced by what `replace` makes of the original (bound to the provider). */
export function interceptMethod<P extends StorageProvider, K extends keyof StorageProvider & keyof P>(
  provider: P,
  name: K,
  replace: (original: P[K] & Method) => P[K],
): P {
  return new Proxy(provider, {
    get(target, property) {
      const value = Reflect.get(target, property, target) as unknown;
      if (typeof value !== 'function') return value;
      const method = (value as Method).bind(target);
      return property === name ? replace(method as P[K] & Method) : method;
    },
  });
}

/**
 * `provider` whose calls of `methods` first await `before(method)`: what it throws is the call's failure, and a
 * promise that never settles a call that never ends.
 */
export function beforeCalls(provider: StorageProvider, methods: readonly string[], before: (method: string) => void | Promise<void>): StorageProvider {
  return new Proxy(provider, {
    get(target, property) {
      const value = Reflect.get(target, property, target) as unknown;
      if (typeof value !== 'function') return value;
      const method = (value as Method).bind(target);
      if (!methods.includes(String(property))) return method;
      return async (...args: never[]) => {
        await before(String(property));
        return method(...args);
      };
    },
  });
}

/** Providers whose writes tests slow down or count: `before` runs ahead of every `write`. */
export function beforeEachWrite(provider: StorageProvider, before: () => void | Promise<void>): StorageProvider {
  return beforeCalls(provider, ['write'], before);
}

/** Every write `delayMs` slower (none when 0): a job is then surely in hand when a test kills its worker. */
export function slowWrites(provider: StorageProvider, delayMs: number): StorageProvider {
  if (delayMs === 0) return provider;
  return beforeEachWrite(provider, () => new Promise((resolve) => setTimeout(resolve, delayMs)));
}
