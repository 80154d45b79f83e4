/**
 * Many calls through one resilience policy at once (16 concurrent s3 writes used to print a listener-leak warning).
 * A file of its own: Node warns once per process and signal, so an earlier test could hide the warning.
 */
import { describe, expect, it } from 'vitest';
import { ProviderUnavailableError } from '../../src/providers/errors.js';
import { createResiliencePolicy } from '../../src/providers/resilience.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('many calls at once', () => {
  it('run side by side without a MaxListenersExceededWarning', async () => {
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on('warning', onWarning);
    try {
      const policy = createResiliencePolicy({
        name: 'busy backend',
        classify: (error) => new ProviderUnavailableError('raw failure', { cause: error }),
        initialDelayMs: 1,
        maxDelayMs: 5,
        retries: 3,
        breakAfter: 100,
        halfOpenAfterMs: 100,
      });
      const answers = await Promise.all(Array.from({ length: 32 }, (_, i) => policy.execute(async () => (await sleep(20), i))));
      expect(answers).toEqual(Array.from({ length: 32 }, (_, i) => i));
      await sleep(10); // a warning is emitted on a later tick
      expect(warnings.filter((warning) => warning.name === 'MaxListenersExceededWarning').map((warning) => warning.message)).toEqual([]);
    } finally {
      process.off('warning', onWarning);
    }
  });
});
