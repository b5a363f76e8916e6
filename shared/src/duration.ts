import { ErrorCode, SrError } from './errors.js';

// Written here rather than taken from `ms`: `ms` reads a bare number as milliseconds ("30" → 30 ms, an
// easy way to configure a retention of nothing), accepts fractions and negatives, and has no compound
// form. Operators type these on a command line, so the grammar is strict and every unit is explicit.

const UNIT_MS = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
} as const;

type Unit = keyof typeof UNIT_MS;

/** Units largest first: a compound duration names each unit at most once, in this order ("1h30m"). */
const ORDER: readonly Unit[] = ['w', 'd', 'h', 'm', 's', 'ms'];

const PART = /(\d+)(ms|w|d|h|m|s)/y;

/**
 * Parses a duration such as `500ms`, `1s`, `5m`, `24h`, `15d`, `2w` or a compound of them largest unit
 * first (`1h30m`, `1d12h`) into milliseconds. Zero is allowed (`0s`); a bare number, a fraction, a sign,
 * spaces or a repeated / out-of-order unit are refused with `SR_BAD_OPTION`.
 *
 * @param what names the option in the error message, e.g. `--retention`.
 */
export function parseDuration(value: string, what = 'duration'): number {
  const bad = (why: string): SrError =>
    new SrError(
      ErrorCode.BAD_OPTION,
      `${what} "${value}" ${why}; write a number and a unit (ms, s, m, h, d, w), e.g. 30s, 15m, 24h, 1h30m`,
    );
  if (value.length === 0) throw bad('is empty');
  if (value.length > 64) throw bad('is too long');
  let at = 0;
  let total = 0;
  let lastRank = -1;
  while (at < value.length) {
    PART.lastIndex = at;
    const m = PART.exec(value);
    if (m === null) throw bad(/^\d+$/.test(value) ? 'has no unit' : 'is not a duration');
    const unit = m[2] as Unit;
    const rank = ORDER.indexOf(unit);
    if (rank <= lastRank) throw bad(`repeats a unit or puts "${unit}" after a smaller one`);
    lastRank = rank;
    total += Number(m[1]) * UNIT_MS[unit];
    at = PART.lastIndex;
  }
  if (!Number.isSafeInteger(total)) throw bad('is too large');
  return total;
}

/** The shortest exact spelling of `ms` in the grammar {@link parseDuration} reads (`90000` → `1m30s`). */
export function formatDuration(ms: number): string {
  if (!Number.isSafeInteger(ms) || ms < 0)
    throw new SrError(ErrorCode.BAD_OPTION, `duration ${ms} ms is not a whole non-negative number of milliseconds`);
  if (ms === 0) return '0s';
  let rest = ms;
  let out = '';
  for (const unit of ORDER) {
    const n = Math.floor(rest / UNIT_MS[unit]);
    if (n > 0) {
      out += `${n}${unit}`;
      rest -= n * UNIT_MS[unit];
    }
  }
  return out;
}
