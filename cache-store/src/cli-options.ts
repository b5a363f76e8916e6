import { ErrorCode, SrError } from '@site-recovery/shared';

/** Parses HOST:PORT (IPv6 as [::1]:PORT). Port 0 asks the OS for a free one. */
export function parseHostPort(value: string, option: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (m === null || port > 65535) {
    throw new SrError(ErrorCode.BAD_OPTION, `${option} "${value}" is not HOST:PORT (for example 127.0.0.1:7400)`);
  }
  return { host: (m[1] ?? m[2])!, port };
}

/** An integer option of at least `min`; commander calls it with the raw text. */
export function intOption(name: string, min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < min) throw new SrError(ErrorCode.BAD_OPTION, `${name} "${value}" must be an integer of at least ${min}`);
    return n;
  };
}
