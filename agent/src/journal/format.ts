import {
  ErrorCode,
  RECORD_CANONICAL_BYTES,
  RECORD_MAGIC,
  RecordKind,
  SrError,
  crc32c,
  isGroupKind,
  isRecordKind,
  MAX_GROUP_RECORD_BYTES,
  recordChecksum,
  writeCanonical,
  type ChangeRecord,
} from '@site-recovery/shared';
import { DIRECT_IO_ALIGNMENT } from '@site-recovery/shared';

/**
 * On-disk layout of journal segments. All integers big-endian.
 *
 * Segment header (32 bytes):
 *   0  8  magic "SRJSEG\0\x01"
 *   8  4  format version: 2 (1 is still read: its segments hold no pads). Pads came with 2, so an
 *         older agent refuses a newer journal rather than taking a pad for a torn tail and cutting there.
 *   12 4  reserved (0)
 *   16 8  LSN of the first record in the segment
 *   24 4  reserved (0)
 *   28 4  CRC-32C of bytes 0..28
 *
 * Record (44-byte header + payload):
 *   0  32 canonical block (shared/record-checksum.ts): magic "SRJR", kind, 0, disk, LSN, offset,
 *         length, payload length
 *   32 4  CRC-32C of the canonical block continued over the payload (the record's end-to-end checksum)
 *   36 8  capture time, ms since the epoch (float64; informational, for lag)
 *
 * Pad (12-byte header + zeros; carries no change and no LSN). Written before and after a group
 * write that bypasses the page cache, whose file offset and length must be aligned:
 *   0  4  magic "SRJP"
 *   4  4  length of the whole pad, header included (12 .. PAD_MAX_BYTES)
 *   8  4  CRC-32C of bytes 0..8
 */
export const SEGMENT_MAGIC = Buffer.from('SRJSEG\0\x01', 'latin1');
export const SEGMENT_VERSION = 2;
const READABLE_VERSIONS = new Set([1, 2]);
export const SEGMENT_HEADER_BYTES = 32;
export const RECORD_HEADER_BYTES = 44;
export const PAD_MAGIC = 0x53524a50; // "SRJP"
export const PAD_HEADER_BYTES = 12;
/** A pad reaches the next alignment boundary, one block further when the gap is under a header. */
const PAD_MAX_BYTES = 2 * DIRECT_IO_ALIGNMENT;

function writeU64(b: Buffer, v: number, at: number): void {
  b.writeUInt32BE(Math.floor(v / 0x1_0000_0000), at);
  b.writeUInt32BE(v >>> 0, at + 4);
}

function readU64(b: Buffer, at: number): number {
  return b.readUInt32BE(at) * 0x1_0000_0000 + b.readUInt32BE(at + 4);
}

export function encodeSegmentHeader(firstLsn: number): Buffer {
  const b = Buffer.alloc(SEGMENT_HEADER_BYTES);
  SEGMENT_MAGIC.copy(b, 0);
  b.writeUInt32BE(SEGMENT_VERSION, 8);
  writeU64(b, firstLsn, 16);
  b.writeUInt32BE(crc32c(b.subarray(0, 28)), 28);
  return b;
}

export function decodeSegmentHeader(b: Buffer, file: string): { firstLsn: number; version: number } {
  if (b.length < SEGMENT_HEADER_BYTES || !b.subarray(0, 8).equals(SEGMENT_MAGIC)) {
    throw new SrError(ErrorCode.JOURNAL_CORRUPT, `${file}: not a journal segment (bad magic)`);
  }
  if (b.readUInt32BE(28) !== crc32c(b.subarray(0, 28))) {
    throw new SrError(ErrorCode.JOURNAL_CORRUPT, `${file}: segment header checksum mismatch`);
  }
  const version = b.readUInt32BE(8);
  if (!READABLE_VERSIONS.has(version)) {
    throw new SrError(
      ErrorCode.JOURNAL_CORRUPT,
      `${file}: unsupported segment version ${version} (this agent reads ${[...READABLE_VERSIONS].join(' and ')}; was it written by a newer one?)`,
    );
  }
  return { firstLsn: readU64(b, 16), version };
}

/** The header of a record; the payload (if any) is written after it as a separate buffer. */
export function encodeRecordHeader(r: ChangeRecord): Buffer {
  const h = Buffer.allocUnsafe(RECORD_HEADER_BYTES);
  writeCanonical(h, 0, r, r.data?.length ?? 0);
  h.writeUInt32BE(r.crc ?? recordChecksum(r, r.data), 32);
  h.writeDoubleBE(r.time ?? 0, 36);
  return h;
}

/** A pad of `bytes` (PAD_HEADER_BYTES..PAD_MAX_BYTES): its header, then zeros. */
export function encodePad(bytes: number): Buffer {
  const b = Buffer.alloc(bytes);
  writePadHeader(b, 0, bytes);
  return b;
}

/** Writes a pad header at `at` of `b`; the caller provides the zeros after it. */
export function writePadHeader(b: Buffer, at: number, bytes: number): void {
  if (bytes < PAD_HEADER_BYTES || bytes > PAD_MAX_BYTES) throw new RangeError(`pad of ${bytes} bytes`);
  b.writeUInt32BE(PAD_MAGIC, at);
  b.writeUInt32BE(bytes, at + 4);
  b.writeUInt32BE(crc32c(b.subarray(at, at + 8)), at + 8);
}

/** Whether the bytes at `at` start a pad (only the magic is looked at: decodeRecord validates). */
export function isPadAt(b: Buffer, at: number): boolean {
  return b.length - at >= 4 && b.readUInt32BE(at) === PAD_MAGIC;
}

type DecodeResult =
  | { readonly ok: true; readonly record: ChangeRecord; readonly bytes: number }
  /** A pad: no change, skip `bytes`. */
  | { readonly ok: true; readonly record: undefined; readonly bytes: number }
  /** Not enough bytes for a whole record: a torn tail if this is the end of the file. */
  | { readonly ok: false; readonly reason: 'short' }
  | { readonly ok: false; readonly reason: 'invalid'; readonly detail: string };

/**
 * Decodes the record at `at`. `data` of a decoded write is a view into `b`. Every field is checked
 * before the payload is touched: magic, kind, lengths against `maxRecordBytes`, checksum.
 */
export function decodeRecord(b: Buffer, at: number, maxRecordBytes: number): DecodeResult {
  if (isPadAt(b, at)) return decodePad(b, at);
  if (b.length - at < RECORD_HEADER_BYTES) return { ok: false, reason: 'short' };
  if (b.readUInt32BE(at) !== RECORD_MAGIC) return { ok: false, reason: 'invalid', detail: 'bad record magic' };
  const kind = b.readUInt8(at + 4);
  const length = b.readUInt32BE(at + 24);
  const payloadLength = b.readUInt32BE(at + 28);
  if (!isRecordKind(kind)) {
    return { ok: false, reason: 'invalid', detail: `unknown record kind ${kind}` };
  }
  const group = isGroupKind(kind);
  const fits =
    kind === RecordKind.WRITE
      ? payloadLength === length
      : group
        ? length === 0 && payloadLength > 0 && payloadLength <= MAX_GROUP_RECORD_BYTES
        : payloadLength === 0;
  if (!fits) return { ok: false, reason: 'invalid', detail: 'payload length does not match kind' };
  if (payloadLength > maxRecordBytes)
    return { ok: false, reason: 'invalid', detail: `payload of ${payloadLength} bytes exceeds the limit` };
  const end = at + RECORD_HEADER_BYTES + payloadLength;
  if (b.length < end) return { ok: false, reason: 'short' };
  const payload = b.subarray(at + RECORD_HEADER_BYTES, end);
  let crc = crc32c(b.subarray(at, at + RECORD_CANONICAL_BYTES));
  if (payloadLength > 0) crc = crc32c(payload, crc);
  if (crc !== b.readUInt32BE(at + RECORD_CANONICAL_BYTES))
    return { ok: false, reason: 'invalid', detail: 'record checksum mismatch' };
  const record: ChangeRecord = {
    lsn: readU64(b, at + 8),
    kind,
    disk: b.readUInt16BE(at + 6),
    offset: readU64(b, at + 16),
    length,
    crc,
    time: b.readDoubleBE(at + 36),
    ...(kind === RecordKind.WRITE || group ? { data: payload } : {}),
  };
  return { ok: true, record, bytes: RECORD_HEADER_BYTES + payloadLength };
}

function decodePad(b: Buffer, at: number): DecodeResult {
  if (b.length - at < PAD_HEADER_BYTES) return { ok: false, reason: 'short' };
  const bytes = padLength(b, at);
  if (typeof bytes === 'string') return { ok: false, reason: 'invalid', detail: bytes };
  if (b.length - at < bytes) return { ok: false, reason: 'short' };
  return { ok: true, record: undefined, bytes };
}

/**
 * The length of the pad whose whole header is at `at` of `b`, or why it is not a valid one. For
 * readers that hold only a pad's header (the cursor), and decodeRecord.
 */
export function padLength(b: Buffer, at: number): number | string {
  if (b.length - at < PAD_HEADER_BYTES) return 'truncated pad';
  if (b.readUInt32BE(at + 8) !== crc32c(b.subarray(at, at + 8))) return 'pad checksum mismatch';
  const bytes = b.readUInt32BE(at + 4);
  if (bytes < PAD_HEADER_BYTES || bytes > PAD_MAX_BYTES) return `pad of ${bytes} bytes`;
  return bytes;
}
