import { ErrorCode, SrError, crc32c } from '@site-recovery/shared';

/**
 * On-disk layout of cache-store segments. All integers big-endian.
 *
 * Segment header (96 bytes):
 *   0  8  magic "SRCSEG\0\x01"
 *   8  4  format version (1)
 *   12 4  length of the generation in bytes (1..64)
 *   16 8  LSN the segment's first frame starts at
 *   24 64 generation (ASCII, zero-padded)
 *   88 4  reserved (0)
 *   92 4  CRC-32C of bytes 0..92
 *
 * Frame (24-byte header + the batch message exactly as received):
 *   0  4  frame length in bytes
 *   4  4  record count
 *   8  8  LSN of the first record
 *   16 4  reserved (0)
 *   20 4  CRC-32C of bytes 0..20 continued over the frame bytes
 *
 * The LSN range sits in the header so that opening a segment builds its index without decoding
 * msgpack, and the checksum covers it so a torn header is caught like a torn frame.
 */
export const SEGMENT_MAGIC = Buffer.from('SRCSEG\0\x01', 'latin1');
export const SEGMENT_VERSION = 1;
export const SEGMENT_HEADER_BYTES = 96;
export const FRAME_HEADER_BYTES = 24;
const MAX_GENERATION_BYTES = 64;

function writeU64(b: Buffer, v: number, at: number): void {
  b.writeUInt32BE(Math.floor(v / 0x1_0000_0000), at);
  b.writeUInt32BE(v >>> 0, at + 4);
}

function readU64(b: Buffer, at: number): number {
  return b.readUInt32BE(at) * 0x1_0000_0000 + b.readUInt32BE(at + 4);
}

export function encodeSegmentHeader(firstLsn: number, generation: string): Buffer {
  const gen = Buffer.from(generation, 'latin1');
  if (gen.length < 1 || gen.length > MAX_GENERATION_BYTES)
    throw new SrError(ErrorCode.PROTOCOL, `generation "${generation}" does not fit a segment header`);
  const b = Buffer.alloc(SEGMENT_HEADER_BYTES);
  SEGMENT_MAGIC.copy(b, 0);
  b.writeUInt32BE(SEGMENT_VERSION, 8);
  b.writeUInt32BE(gen.length, 12);
  writeU64(b, firstLsn, 16);
  gen.copy(b, 24);
  b.writeUInt32BE(crc32c(b.subarray(0, 92)), 92);
  return b;
}

export interface SegmentHeader {
  readonly firstLsn: number;
  readonly generation: string;
}

/** Decodes a segment header; `reason` says why it is not one (the caller names the file). */
export function decodeSegmentHeader(b: Buffer): SegmentHeader | { readonly reason: string } {
  if (b.length < SEGMENT_HEADER_BYTES) return { reason: 'shorter than a segment header' };
  if (!b.subarray(0, 8).equals(SEGMENT_MAGIC)) return { reason: 'not a cache-store segment (bad magic)' };
  if (b.readUInt32BE(92) !== crc32c(b.subarray(0, 92))) return { reason: 'segment header checksum mismatch' };
  const version = b.readUInt32BE(8);
  if (version !== SEGMENT_VERSION) return { reason: `unsupported segment version ${version}` };
  const genLength = b.readUInt32BE(12);
  if (genLength < 1 || genLength > MAX_GENERATION_BYTES)
    return { reason: `generation length ${genLength} out of range` };
  return { firstLsn: readU64(b, 16), generation: b.toString('latin1', 24, 24 + genLength) };
}

/** The header written before a frame; the frame itself follows as a separate buffer. */
export function encodeFrameHeader(first: number, count: number, frame: Buffer): Buffer {
  const h = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  h.writeUInt32BE(frame.length, 0);
  h.writeUInt32BE(count, 4);
  writeU64(h, first, 8);
  h.writeUInt32BE(0, 16);
  h.writeUInt32BE(crc32c(frame, crc32c(h.subarray(0, 20))), 20);
  return h;
}

export type FrameDecode =
  | {
      readonly ok: true;
      readonly first: number;
      readonly count: number;
      readonly frame: Buffer;
      readonly bytes: number;
    }
  /** Not enough bytes for the whole frame: a torn tail if this is the end of the newest segment. */
  | { readonly ok: false; readonly reason: 'short' }
  | { readonly ok: false; readonly reason: 'invalid'; readonly detail: string };

/**
 * Decodes the frame at `at` of `b`; `frame` is a view into `b`. The declared length is checked
 * against `maxFrameBytes` before it is trusted, the checksum before anything else is.
 */
export function decodeFrame(b: Buffer, at: number, maxFrameBytes: number): FrameDecode {
  if (b.length - at < FRAME_HEADER_BYTES) return { ok: false, reason: 'short' };
  const length = b.readUInt32BE(at);
  const count = b.readUInt32BE(at + 4);
  if (length > maxFrameBytes)
    return { ok: false, reason: 'invalid', detail: `frame of ${length} bytes exceeds the limit of ${maxFrameBytes}` };
  if (count < 1) return { ok: false, reason: 'invalid', detail: 'frame holds no records' };
  const end = at + FRAME_HEADER_BYTES + length;
  if (b.length < end) return { ok: false, reason: 'short' };
  const frame = b.subarray(at + FRAME_HEADER_BYTES, end);
  if (crc32c(frame, crc32c(b.subarray(at, at + 20))) !== b.readUInt32BE(at + 20))
    return { ok: false, reason: 'invalid', detail: 'frame checksum mismatch' };
  return { ok: true, first: readU64(b, at + 8), count, frame, bytes: FRAME_HEADER_BYTES + length };
}
