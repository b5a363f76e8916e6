import { ErrorCode, SrError } from './errors.js';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const PART = /(\d+)(ms|s|m|h|d)/gy;

/** Parses durations such as `1s`, `5m`, `24h`, `15d` or `1h30m` into milliseconds. */
export function parseDuration(value: string, option = 'duration'): number {
  let total = 0;
  let matched = 0;
  PART.lastIndex = 0;
  for (let m = PART.exec(value); m !== null; m = PART.exec(value)) {
    total += Number(m[1]) * UNIT_MS[m[2]!]!;
    matched = PART.lastIndex;
  }
  if (value.length === 0 || matched !== value.length || !Number.isSafeInteger(total)) {
    throw new SrError(ErrorCode.BAD_OPTION, `${option} "${value}" is not a duration: use a number with a unit, e.g. 1s, 5m, 24h, 15d or 1h30m`);
  }
  return total;
}
