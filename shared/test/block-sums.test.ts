import { describe, expect, it } from 'vitest';
import { BLOCK_SUM_BYTES, blockSums, zeroBlockSum } from '../src/block-sums.js';

describe('blockSums', () => {
  it('sums each block, the last one short, as XXH3-128 (big-endian, as its canonical form)', () => {
    const sums = blockSums(Buffer.from('abcdefghij'), 4);
    expect(sums.length).toBe(3 * BLOCK_SUM_BYTES);
    expect(blockSums(Buffer.alloc(0), 4).length).toBe(0);
    expect(blockSums(Buffer.from('abcd'), 4)).toEqual(sums.subarray(0, 16));
    expect(blockSums(Buffer.from('ij'), 4)).toEqual(sums.subarray(32, 48));
    expect(sums.subarray(0, 16)).not.toEqual(sums.subarray(16, 32));
  });

  it('matches the reference vector of XXH3-128', () => {
    // xxhsum -H2 of 'abc' (xxHash 0.8): 06b05ab6733a618578af5f94892f3950
    expect(blockSums(Buffer.from('abc'), 4096).toString('hex')).toBe('06b05ab6733a618578af5f94892f3950');
  });

  it('tells a one-bit change apart and equal blocks alike', () => {
    const a = Buffer.alloc(8192, 7);
    const b = Buffer.from(a);
    b[5000] = 6;
    const sa = blockSums(a, 4096);
    const sb = blockSums(b, 4096);
    expect(sa.subarray(0, 16)).toEqual(sb.subarray(0, 16));
    expect(sa.subarray(16)).not.toEqual(sb.subarray(16));
  });

  it('gives the zero block sum for zeroes', () => {
    expect(blockSums(Buffer.alloc(4096), 4096)).toEqual(zeroBlockSum(4096));
    expect(zeroBlockSum(4096)).not.toEqual(zeroBlockSum(8192));
  });
});
