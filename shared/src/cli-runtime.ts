import { ErrorCode, SrError, isSrError } from './errors.js';
import type { Logger } from './logger.js';

/** Parses HOST:PORT (IPv6 as [::1]:PORT). Port 0 asks the OS for a free one. */
export function parseHostPort(value: string, option: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (m === null || port > 65535) {
    throw new SrError(ErrorCode.BAD_OPTION, `${option} "${value}" is not HOST:PORT (for example 127.0.0.1:10809)`);
  }
  return { host: (m[1] ?? m[2])!, port };
}

/**
 * Runs a CLI's main function: an error ends the process with exit code 2 and one line on stderr,
 * `NAME: CODE: message`, the code being stable for scripts to match on.
 */
export function runCli(name: string, main: () => Promise<void>): void {
  main().catch((err: unknown) => {
    const code = isSrError(err) ? err.code : ErrorCode.INTERNAL;
    process.stderr.write(`${name}: ${code}: ${(err as Error).message}\n`);
    process.exit(2);
  });
}

/** On SIGINT or SIGTERM, runs `stop` once and exits 0, or 1 if stopping failed. */
export function stopOnSignals(log: Logger, stop: () => Promise<unknown>): void {
  let stopping = false;
  const onSignal = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err: (err as Error).message }, 'unclean stop');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
}

/** A commander argument parser for an integer option of at least `min`; bad text is SR_BAD_OPTION. */
export function intOption(option: string, min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isSafeInteger(n) || n < min) {
      throw new SrError(ErrorCode.BAD_OPTION, `${option} "${value}" must be an integer of at least ${min}`);
    }
    return n;
  };
}
