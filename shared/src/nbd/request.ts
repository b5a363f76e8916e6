import { Cmd, CmdFlag, Errno, REQUEST_MAGIC } from './constants.js';

/** A transmission-phase request header, as read off the wire. */
export interface NbdRequest {
  readonly flags: number;
  readonly type: number;
  /** Opaque 8 bytes echoed in the reply. */
  readonly cookie: Buffer;
  readonly offset: number;
  readonly length: number;
}

/** Parses the 28-byte header; `undefined` when the magic is wrong (the stream cannot be resynchronised). */
export function parseRequest(h: Buffer): NbdRequest | undefined {
  if (h.readUInt32BE(0) !== REQUEST_MAGIC) return undefined;
  const offset = h.readBigUInt64BE(16);
  return {
    flags: h.readUInt16BE(4),
    type: h.readUInt16BE(6),
    cookie: Buffer.from(h.subarray(8, 16)),
    // Offsets beyond 2^53 cannot address any real disk; clamp so the bounds check rejects them.
    offset: offset > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(offset),
    length: h.readUInt32BE(24),
  };
}

const ALLOWED_FLAGS: Record<number, number> = {
  [Cmd.READ]: CmdFlag.FUA,
  [Cmd.WRITE]: CmdFlag.FUA,
  [Cmd.DISC]: CmdFlag.FUA,
  [Cmd.FLUSH]: CmdFlag.FUA,
  [Cmd.TRIM]: CmdFlag.FUA,
  [Cmd.CACHE]: CmdFlag.FUA,
  [Cmd.WRITE_ZEROES]: CmdFlag.FUA | CmdFlag.NO_HOLE,
};

export interface ExportShape {
  readonly size: number;
  readonly readOnly: boolean;
  /** Alignment enforced on offsets and lengths: the advertised minimum if the client asked for it, else 1. */
  readonly alignment: number;
  readonly maxPayloadBytes: number;
}

/**
 * Validates a request once, before any storage is touched. Returns the errno to answer with, or OK.
 * The errno choices follow the spec's conventions: writes past the end get ENOSPC, other
 * out-of-range or misaligned requests EINVAL.
 */
export function validateRequest(r: NbdRequest, e: ExportShape): Errno {
  const allowed = ALLOWED_FLAGS[r.type];
  if (allowed === undefined) return Errno.EINVAL; // unknown command, or BLOCK_STATUS without structured replies
  if ((r.flags & ~allowed) !== 0) return Errno.EINVAL;
  if (r.type === Cmd.FLUSH || r.type === Cmd.DISC) return Errno.OK;
  const isWrite = r.type === Cmd.WRITE || r.type === Cmd.WRITE_ZEROES || r.type === Cmd.TRIM;
  if (isWrite && e.readOnly) return Errno.EPERM;
  if ((r.type === Cmd.READ || r.type === Cmd.WRITE) && r.length > e.maxPayloadBytes) return Errno.EINVAL;
  if (r.offset + r.length > e.size) {
    return r.type === Cmd.WRITE || r.type === Cmd.WRITE_ZEROES ? Errno.ENOSPC : Errno.EINVAL;
  }
  if (e.alignment > 1 && (r.offset % e.alignment !== 0 || r.length % e.alignment !== 0)) return Errno.EINVAL;
  return Errno.OK;
}
