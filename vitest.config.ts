import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // Two cores on CI: more parallel files only adds contention to the fsync- and Redis-bound suites.
    maxWorkers: 2,
    globalSetup: ['test/support/global-setup.ts'],
  },
});
