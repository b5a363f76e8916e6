import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['*/test/**/*.test.ts', 'test/scenarios/**/*.test.ts'],
    // Tests start real servers and real NBD clients; two cores run two files at a time at most.
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 180_000,
    hookTimeout: 60_000,
    // A skipped test is a gap: `.only` is refused, and any skipped or todo test fails the run.
    allowOnly: false,
    reporters: ['default', './scripts/no-skipped-tests.ts'],
    passWithNoTests: false,
  },
});
