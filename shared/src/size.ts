import { ErrorCode, SrError } from './errors.js';

// Written here rather than taken from npm's `bytes` (or its fork `bytes-iec`): `bytes` needs the B
// ("4mb"; "4M" is read by its parseInt fallback as 4 bytes, as is "12garbage" as 12), takes negatives,
// and floors fractions to a byte count nobody typed. `xbytes` and `filesize` read MB as 10^6. The
// grammar below is small, strict and binary, like the duration parser beside it.

/** The multipliers, all binary: 1K = 1024 bytes. */
const UNIT_BYTES = { '': 1n, K: 1n << 10n, M: 1n << 20n, G: 1n << 30n, T: 1n << 40n } as const;

type Unit = keyof typeof UNIT_BYTES;

/** Largest first, for {@link formatSize}. */
const ORDER: readonly Exclude<Unit, ''>[] = ['T', 'G', 'M', 'K'];

const SIZE = /^(\d+)(?:\.(\d+))?([KMGT])?(iB)?$/i;

/** What every refusal ends with: the grammar, by example. */
export const SIZE_HINT = 'write bytes, or a number with K, M, G or T (binary: 1K = 1024), e.g. 65536, 512K, 4M, 10G';

/**
 * Parses a size in bytes: a whole number (`65536`), or a number with a binary multiple, K, M, G or T
 * (1K = 1024), optionally spelled KiB, MiB, GiB, TiB; letters in either case (`4M`, `4m`, `4MiB`). A
 * fraction is taken when it comes to whole bytes (`1.5M` = 1572864, `0.5K` = 512, not `1.1K`). Refused
 * with SR_BAD_OPTION: `4MB` and `4B` (MB means 10^6 bytes to some and Mb megabits to others, so the
 * ambiguous spelling is refused rather than guessed), negatives, signs, spaces, exponents, hex, other
 * units, and anything past Number.MAX_SAFE_INTEGER.
 *
 * @param what names the option in the error message, e.g. `--journal-max-bytes`.
 */
export function parseSize(value: string, what = 'size'): number {
  const bad = (why: string): SrError => new SrError(ErrorCode.BAD_OPTION, `${what} "${value}" ${why}; ${SIZE_HINT}`);
  if (value.length === 0) throw bad('is empty');
  if (value.length > 64) throw bad('is too long');
  if (/^-\d/.test(value)) throw bad('is negative');
  const ambiguous = /^(\d+(?:\.\d+)?)([KMGT]?)B$/i.exec(value);
  if (ambiguous !== null) {
    const [, n, letter] = ambiguous;
    const spell = letter === '' ? n : `${n}${letter!.toUpperCase()} or ${n}${letter!.toUpperCase()}iB`;
    throw bad(`is ambiguous (decimal or binary? bytes or bits?): sizes here are binary, so write ${spell}`);
  }
  const m = SIZE.exec(value);
  if (m === null) throw bad('is not a size');
  const [, whole, fraction = '', letter = '', iB] = m;
  if (iB !== undefined && letter === '') throw bad('is not a size');
  const unit = UNIT_BYTES[letter.toUpperCase() as Unit];
  const scaled = BigInt(whole! + fraction) * unit;
  const divisor = 10n ** BigInt(fraction.length);
  if (scaled % divisor !== 0n) throw bad('is not a whole number of bytes');
  const bytes = scaled / divisor;
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(`is larger than ${Number.MAX_SAFE_INTEGER} bytes`);
  return Number(bytes);
}

/**
 * A commander argument parser for a size option of at least `min` bytes (and at most `max`), in the
 * grammar of {@link parseSize}; a refusal is SR_BAD_OPTION and names the option.
 */
export function sizeOption(option: string, min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value) => {
    const n = parseSize(value, option);
    if (n < min)
      throw new SrError(
        ErrorCode.BAD_OPTION,
        `${option} "${value}" is too small: it must be at least ${formatSize(min)} (${min} bytes)`,
      );
    if (n > max)
      throw new SrError(
        ErrorCode.BAD_OPTION,
        `${option} "${value}" is too large: it must be at most ${formatSize(max)} (${max} bytes)`,
      );
    return n;
  };
}

/** The shortest exact spelling of `bytes` that {@link parseSize} reads back (`67108864` → `64M`, `1536` → `1536`). */
export function formatSize(bytes: number): string {
  if (!Number.isSafeInteger(bytes) || bytes < 0)
    throw new SrError(ErrorCode.BAD_OPTION, `size ${bytes} is not a whole non-negative number of bytes`);
  const b = BigInt(bytes);
  for (const unit of ORDER) {
    if (b !== 0n && b % UNIT_BYTES[unit] === 0n) return `${b / UNIT_BYTES[unit]}${unit}`;
  }
  return String(bytes);
}
