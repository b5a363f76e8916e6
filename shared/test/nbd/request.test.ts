import { describe, expect, it } from 'vitest';
import { Cmd, CmdFlag, Errno, REQUEST_MAGIC } from '../../src/nbd/constants.js';
import { parseRequest, validateRequest, type ExportShape } from '../../src/nbd/request.js';

const shape: ExportShape = { size: 1 << 20, readOnly: false, alignment: 512, maxPayloadBytes: 32 << 20 };

function header(type: number, flags: number, offset: bigint, length: number, magic = REQUEST_MAGIC): Buffer {
  const b = Buffer.alloc(28);
  b.writeUInt32BE(magic, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.write('0102030405060708', 8, 'hex');
  b.writeBigUInt64BE(offset, 16);
  b.writeUInt32BE(length, 24);
  return b;
}

const check = (type: number, flags: number, offset: bigint, length: number, s: ExportShape = shape): Errno =>
  validateRequest(parseRequest(header(type, flags, offset, length))!, s);

describe('request validation', () => {
  it('parses the 28-byte header and keeps the cookie opaque', () => {
    const r = parseRequest(header(Cmd.WRITE, CmdFlag.FUA, 4096n, 512))!;
    expect(r).toMatchObject({ type: Cmd.WRITE, flags: CmdFlag.FUA, offset: 4096, length: 512 });
    expect(r.cookie.toString('hex')).toBe('0102030405060708');
    expect(parseRequest(header(Cmd.READ, 0, 0n, 0, 0x12345678))).toBeUndefined();
  });

  it('accepts in-range, aligned requests', () => {
    expect(check(Cmd.READ, 0, 0n, 4096)).toBe(Errno.OK);
    expect(check(Cmd.WRITE, CmdFlag.FUA, BigInt((1 << 20) - 512), 512)).toBe(Errno.OK);
    expect(check(Cmd.WRITE_ZEROES, CmdFlag.NO_HOLE | CmdFlag.FUA, 0n, 1 << 20)).toBe(Errno.OK);
    expect(check(Cmd.FLUSH, 0, 0n, 0)).toBe(Errno.OK);
  });

  it('gives writes past the end ENOSPC and other out-of-range requests EINVAL', () => {
    expect(check(Cmd.WRITE, 0, BigInt(1 << 20), 512)).toBe(Errno.ENOSPC);
    expect(check(Cmd.WRITE_ZEROES, 0, 512n, 1 << 20)).toBe(Errno.ENOSPC);
    expect(check(Cmd.READ, 0, BigInt(1 << 20), 512)).toBe(Errno.EINVAL);
    expect(check(Cmd.TRIM, 0, 0xffffffffffffffffn, 512)).toBe(Errno.EINVAL);
    expect(check(Cmd.CACHE, 0, BigInt(1 << 20), 512)).toBe(Errno.EINVAL);
  });

  it('rejects misaligned requests only when the client agreed to the block size', () => {
    expect(check(Cmd.WRITE, 0, 1n, 3)).toBe(Errno.EINVAL);
    expect(check(Cmd.WRITE, 0, 1n, 3, { ...shape, alignment: 1 })).toBe(Errno.OK);
  });

  it('rejects oversized payloads, unknown commands and unknown or inapplicable flags', () => {
    const big = { ...shape, size: 1 << 30 };
    expect(check(Cmd.READ, 0, 0n, (32 << 20) + 512, big)).toBe(Errno.EINVAL);
    expect(check(Cmd.WRITE, 0, 0n, (32 << 20) + 512, big)).toBe(Errno.EINVAL);
    expect(check(Cmd.TRIM, 0, 0n, 64 << 20, big)).toBe(Errno.OK); // no payload: may exceed the maximum
    expect(check(99, 0, 0n, 0)).toBe(Errno.EINVAL);
    expect(check(Cmd.BLOCK_STATUS, 0, 0n, 512)).toBe(Errno.EINVAL);
    expect(check(Cmd.WRITE, CmdFlag.NO_HOLE, 0n, 512)).toBe(Errno.EINVAL);
    expect(check(Cmd.WRITE_ZEROES, CmdFlag.FAST_ZERO, 0n, 512)).toBe(Errno.EINVAL);
    expect(check(Cmd.READ, CmdFlag.DF, 0n, 512)).toBe(Errno.EINVAL);
    expect(check(Cmd.READ, 0x8000, 0n, 512)).toBe(Errno.EINVAL);
  });

  it('refuses write-type requests on a read-only export with EPERM', () => {
    const ro = { ...shape, readOnly: true };
    expect(check(Cmd.WRITE, 0, 0n, 512, ro)).toBe(Errno.EPERM);
    expect(check(Cmd.TRIM, 0, 0n, 512, ro)).toBe(Errno.EPERM);
    expect(check(Cmd.READ, 0, 0n, 512, ro)).toBe(Errno.OK);
  });
});
