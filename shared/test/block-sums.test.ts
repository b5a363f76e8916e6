import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { BLOCK_SUM_BYTES, blockSums, zeroBlockSum } from '../src/block-sums.js';

describe('blockSums', () => {
  it('sums each block, the last one short, as SHA-256 cut to 16 bytes', () => {
    const data = Buffer.from('abcdefghij');
    const sums = blockSums(data, 4);
    expect(sums.length).toBe(3 * BLOCK_SUM_BYTES);
    const want = ['abcd', 'efgh', 'ij'].map((s) => createHash('sha256').update(s).digest().subarray(0, 16));
    expect(sums).toEqual(Buffer.concat(want));
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
