import { execFileSync } from 'node:child_process';
import { SYSTEM_PATH } from './process.js';

/** External programs the tests drive. scripts/test.sh installs them; a test never skips without them. */
export const REQUIRED_TOOLS = ['qemu-io', 'qemu-img', 'nbdinfo', 'nbdcopy', 'nbdsh', 'fio'] as const;

export function missingTools(tools: readonly string[] = REQUIRED_TOOLS): string[] {
  return tools.filter((t) => {
    try {
      execFileSync('sh', ['-c', `command -v ${t}`], { env: { PATH: SYSTEM_PATH }, stdio: 'ignore' });
      return false;
    } catch {
      return true;
    }
  });
}

/** Throws (failing the test, not skipping it) when a tool is missing. */
export function requireTools(tools: readonly string[] = REQUIRED_TOOLS): void {
  const missing = missingTools(tools);
  if (missing.length > 0) {
    throw new Error(
      `missing tools: ${missing.join(', ')}; run "npm test" (it installs qemu-utils, libnbd-bin, python3-libnbd, fio) or apt-get install them`,
    );
  }
}
