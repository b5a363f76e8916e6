import { ErrorCode, isSrError } from '../src/index.js';
import { describe, expect, it } from 'vitest';
import { formatDuration, parseDuration } from '../src/index.js';

describe('parseDuration', () => {
  it.each([
    ['0s', 0],
    ['500ms', 500],
    ['1s', 1000],
    ['5m', 300_000],
    ['24h', 86_400_000],
    ['15d', 15 * 86_400_000],
    ['2w', 14 * 86_400_000],
    ['1h30m', 5_400_000],
    ['1d12h', 36 * 3_600_000],
    ['1m1s1ms', 61_001],
    ['90m', 5_400_000],
  ])('%s → %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each([
    ['', 'is empty'],
    ['30', 'has no unit'],
    ['1.5h', 'is not a duration'],
    ['-1h', 'is not a duration'],
    ['1 h', 'is not a duration'],
    ['1H', 'is not a duration'],
    ['h', 'is not a duration'],
    ['1y', 'is not a duration'],
    ['1h1h', 'repeats a unit'],
    ['30m1h', 'after a smaller one'],
    ['5m ', 'is not a duration'],
    ['99999999999999999999d', 'is too large'],
  ])('refuses %j (%s) with SR_BAD_OPTION naming the option', (text, why) => {
    let caught: unknown;
    try {
      parseDuration(text, '--retention');
    } catch (err) {
      caught = err;
    }
    expect(isSrError(caught, ErrorCode.BAD_OPTION)).toBe(true);
    expect((caught as Error).message).toContain('--retention');
    expect((caught as Error).message).toContain(why);
    expect((caught as Error).message).toContain('e.g. 30s');
  });
});

describe('formatDuration', () => {
  it.each([
    [0, '0s'],
    [1, '1ms'],
    [1000, '1s'],
    [90_000, '1m30s'],
    [86_400_000, '1d'],
    [15 * 86_400_000, '2w1d'],
    [3_600_001, '1h1ms'],
  ])('%d ms → %s, and parses back', (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
    expect(parseDuration(text)).toBe(ms);
  });

  it('refuses negative and fractional values', () => {
    expect(() => formatDuration(-1)).toThrow(/SR_BAD_OPTION|non-negative/);
    expect(() => formatDuration(1.5)).toThrow(/non-negative/);
  });
});
