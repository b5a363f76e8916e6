import { describe, expect, it } from 'vitest';
import { lsnFileName, parseLsnFileName } from '../src/lsn-file-name.js';

describe('LSN-named files', () => {
  it('names sort as their LSNs do and parse back', () => {
    const lsns = [1, 15, 16, 4096, 2 ** 40, Number.MAX_SAFE_INTEGER];
    const names = lsns.map((l) => lsnFileName(l, 'srj'));
    expect(names[0]).toBe('0000000000000001.srj');
    expect([...names].sort()).toEqual(names);
    expect(names.map((n) => parseLsnFileName(n, 'srj'))).toEqual(lsns);
  });

  it.each([
    ['0000000000000001.srs', 'another extension'],
    ['0000000000000000.srj', 'LSN 0'],
    ['000000000000001.srj', '15 digits'],
    ['00000000000000001.srj', '17 digits'],
    ['000000000000000A.srj', 'upper-case hex'],
    ['0000000000000001.srj.tmp', 'a temporary file'],
    ['../0000000000000001.srj', 'a path'],
    ['ffffffffffffffff.srj', 'past the safe integers'],
  ])('%s is not a segment (%s)', (name) => {
    expect(parseLsnFileName(name, 'srj')).toBeUndefined();
  });
});
