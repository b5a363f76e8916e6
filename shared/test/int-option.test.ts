import { describe, expect, it } from 'vitest';
import { ErrorCode, intOption } from '../src/index.js';

describe('intOption', () => {
  const parse = intOption('--confirm-bytes', 1);

  it('takes an integer of at least the minimum', () => {
    expect(parse('1')).toBe(1);
    expect(parse('1048576')).toBe(1048576);
  });

  it.each(['0', '-5', '1.5', 'ten', '', ' ', '1e400', '9007199254740993'])(
    '"%s" is refused with SR_BAD_OPTION naming the option',
    (text) => {
      expect(() => parse(text)).toThrow(expect.objectContaining({ code: ErrorCode.BAD_OPTION }));
      expect(() => parse(text)).toThrow(/--confirm-bytes/);
    },
  );
});
