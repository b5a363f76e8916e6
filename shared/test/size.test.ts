import { describe, expect, it } from 'vitest';
import { ErrorCode, formatSize, parseSize, sizeOption } from '../src/index.js';

const K = 1024;
const M = K * K;
const G = M * K;
const T = G * K;

describe('parseSize', () => {
  it.each([
    ['0', 0],
    ['1', 1],
    ['65536', 65536],
    ['007', 7],
    ['512K', 512 * K],
    ['512k', 512 * K],
    ['4M', 4 * M],
    ['4m', 4 * M],
    ['4MiB', 4 * M],
    ['4mib', 4 * M],
    ['4MIB', 4 * M],
    ['10G', 10 * G],
    ['10GiB', 10 * G],
    ['1T', T],
    ['1TiB', T],
    ['1.5M', 1.5 * M],
    ['0.5K', 512],
    ['1.25K', 1280],
    ['1.0', 1],
    ['8191T', 8191 * T],
    ['9007199254740991', Number.MAX_SAFE_INTEGER],
  ])('"%s" is %d bytes', (text, bytes) => {
    expect(parseSize(text, '--x')).toBe(bytes);
  });

  it.each([
    ['', /is empty/],
    ['-1', /is negative/],
    ['-4M', /is negative/],
    ['4MB', /is ambiguous .*: sizes here are binary, so write 4M or 4MiB;/],
    ['4mb', /is ambiguous .*write 4M or 4MiB;/],
    ['4Mb', /is ambiguous .*write 4M or 4MiB;/],
    ['512B', /is ambiguous .*write 512;/],
    ['1.5KB', /is ambiguous .*write 1.5K or 1.5KiB;/],
    ['1.1K', /is not a whole number of bytes/],
    ['0.5', /is not a whole number of bytes/],
    ['1.5', /is not a whole number of bytes/],
    ['8192T', /is larger than 9007199254740991 bytes/],
    ['9007199254740992', /is larger than/],
    ['99999999999999999999T', /is larger than/],
    ['4P', /is not a size/],
    ['4Mi', /is not a size/],
    ['4iB', /is not a size/],
    ['4 M', /is not a size/],
    [' 4M', /is not a size/],
    ['4M ', /is not a size/],
    ['+4', /is not a size/],
    ['1e6', /is not a size/],
    ['0x10', /is not a size/],
    ['.5M', /is not a size/],
    ['1.M', /is not a size/],
    ['M', /is not a size/],
    ['four', /is not a size/],
    ['4MM', /is not a size/],
    ['1'.repeat(65), /is too long/],
  ])('"%s" is refused with SR_BAD_OPTION: %s', (text, why) => {
    let err: unknown;
    try {
      parseSize(text, '--journal-max-bytes');
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: ErrorCode.BAD_OPTION });
    const message = (err as Error).message;
    expect(message).toMatch(why);
    expect(message).toContain(`--journal-max-bytes "${text}"`);
    expect(message).toContain('e.g. 65536, 512K, 4M, 10G');
  });
});

describe('sizeOption', () => {
  const parse = sizeOption('--journal-max-bytes', 4 * M, 8 * T);

  it('takes sizes within its bounds', () => {
    expect(parse('4M')).toBe(4 * M);
    expect(parse('4194304')).toBe(4 * M);
    expect(parse('8T')).toBe(8 * T);
  });

  it.each([
    ['3M', /--journal-max-bytes "3M" is too small: it must be at least 4M \(4194304 bytes\)/],
    ['9T', /--journal-max-bytes "9T" is too large: it must be at most 8T \(8796093022208 bytes\)/],
    ['4MB', /--journal-max-bytes "4MB" is ambiguous/],
  ])('"%s" is refused with SR_BAD_OPTION', (text, message) => {
    expect(() => parse(text)).toThrow(expect.objectContaining({ code: ErrorCode.BAD_OPTION }));
    expect(() => parse(text)).toThrow(message);
  });
});

describe('formatSize', () => {
  it.each([
    [0, '0'],
    [1, '1'],
    [1536, '1536'],
    [64 * K, '64K'],
    [64 * M, '64M'],
    [8 * G, '8G'],
    [3 * T, '3T'],
    [1536 * M, '1536M'],
  ])('%d is written %s and read back', (bytes, text) => {
    expect(formatSize(bytes)).toBe(text);
    expect(parseSize(text)).toBe(bytes);
  });

  it('refuses what is not a byte count', () => {
    expect(() => formatSize(-1)).toThrow(expect.objectContaining({ code: ErrorCode.BAD_OPTION }));
    expect(() => formatSize(1.5)).toThrow(expect.objectContaining({ code: ErrorCode.BAD_OPTION }));
  });
});
