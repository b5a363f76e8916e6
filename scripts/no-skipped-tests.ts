import type { Reporter, TestModule } from 'vitest/node';

/**
 * Fails the run when any test was skipped or left as todo, however it was skipped (`.skip`, `.todo`,
 * `skipIf`, `ctx.skip()`): a skipped test is a gap a user can fall into, and vitest alone would pass.
 */
export default class NoSkippedTests implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    const skipped: string[] = [];
    for (const module of testModules) {
      for (const test of module.children.allTests()) {
        const result = test.result();
        if (result.state === 'skipped') {
          skipped.push(`${module.moduleId}: ${test.fullName}${result.note ? ` (${result.note})` : ''}`);
        } else if (test.options.mode === 'todo') {
          skipped.push(`${module.moduleId}: ${test.fullName} (todo)`);
        }
      }
    }
    if (skipped.length === 0) return;
    process.stderr.write(`\n${skipped.length} test(s) skipped or todo; none may be:\n  ${skipped.join('\n  ')}\n`);
    process.exitCode = 1;
  }
}
