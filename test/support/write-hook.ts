/** Providers whose writes tests slow down or count: `before` runs ahead of every `write`. */
import type { StorageProvider } from '../../src/providers/types.js';

export function beforeEachWrite(provider: StorageProvider, before: () => void | Promise<void>): StorageProvider {
  return new Proxy(provider, {
    get(target, property) {
      const value = Reflect.get(target, property, target) as unknown;
      if (typeof value !== 'function') return value;
      const method = (value as (...args: unknown[]) => unknown).bind(target);
      if (property !== 'write') return method;
      return async (...args: unknown[]) => {
        await before();
        return method(...args);
      };
    },
  });
}

/** Every write `delayMs` slower (none when 0): a job is then surely in hand when a test kills its worker. */
export function slowWrites(provider: StorageProvider, delayMs: number): StorageProvider {
  if (delayMs === 0) return provider;
  return beforeEachWrite(provider, () => new Promise((resolve) => setTimeout(resolve, delayMs)));
}
