import { describe, expect, it } from 'vitest';
import { parseDuration } from '../src/index.js';

describe('parseDuration', () => {
  it.each([
    ['1s', 1000],
    ['5m', 300_000],
    ['24h', 86_400_000],
    ['15d', 1_296_000_000],
    ['1h30m', 5_400_000],
    ['250ms', 250],
  ])('%s is %d ms', (text, ms) => expect(parseDuration(text)).toBe(ms));

  it.each(['', '5', 'm', '5 m', '-1s', '1.5h', '5mins', '1s2', 'abc'])('refuses %j with SR_BAD_OPTION', (text) => {
    expect(() => parseDuration(text, '--retention')).toThrow(expect.objectContaining({ code: 'SR_BAD_OPTION' }) as Error);
  });
});
