import { ErrorCode, RecordKind, SrError, crc32c, type ChangeRecord } from '@site-recovery/shared';

/**
 * On-disk layout of journal segments. All integers big-endian.
 *
 * Segment header (32 bytes):
 *   0  8  magic "SRJSEG\0\x01"
 *   8  4  format version (1)
 *   12 4  reserved (0)
 *   16 8  LSN of the first record in the segment
 *   24 4  reserved (0)
 *   28 4  CRC-32C of bytes 0..28
 *
 * Record (36-byte header + payload):
 *   0  4  magic 0x53524a52 ("SRJR")
 *   4  1  kind (1 write, 2 zero, 3 trim)
 *   5  1  reserved (0)
 *   6  2  disk index
 *   8  8  LSN
 *   16 8  offset in bytes
 *   24 4  length in bytes of the range affected
 *   28 4  payload length (= length for writes, 0 otherwise)
 *   32 4  CRC-32C of bytes 0..32, continued over the payload
 */
export const SEGMENT_MAGIC = Buffer.from('SRJSEG\0\x01', 'latin1');
export const SEGMENT_VERSION = 1;
export const SEGMENT_HEADER_BYTES = 32;
export const RECORD_MAGIC = 0x53524a52;
export const RECORD_HEADER_BYTES = 36;

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

export function decodeSegmentHeader(b: Buffer, file: string): { firstLsn: number } {
  if (b.length < SEGMENT_HEADER_BYTES || !b.subarray(0, 8).equals(SEGMENT_MAGIC)) {
    throw new SrError(ErrorCode.JOURNAL_CORRUPT, `${file}: not a journal segment (bad magic)`);
  }
  if (b.readUInt32BE(28) !== crc32c(b.subarray(0, 28))) {
    throw new SrError(ErrorCode.JOURNAL_CORRUPT, `${file}: segment header checksum mismatch`);
  }
  const version = b.readUInt32BE(8);
  if (version !== SEGMENT_VERSION) {
    throw new SrError(ErrorCode.JOURNAL_CORRUPT, `${file}: unsupported segment version ${version}`);
  }
  return { firstLsn: readU64(b, 16) };
}

/** The header of a record; the payload (if any) is written after it as a separate buffer. */
export function encodeRecordHeader(r: ChangeRecord): Buffer {
  const payload = r.data;
  const h = Buffer.allocUnsafe(RECORD_HEADER_BYTES);
  h.writeUInt32BE(RECORD_MAGIC, 0);
  h.writeUInt8(r.kind, 4);
  h.writeUInt8(0, 5);
  h.writeUInt16BE(r.disk, 6);
  writeU64(h, r.lsn, 8);
  writeU64(h, r.offset, 16);
  h.writeUInt32BE(r.length, 24);
  h.writeUInt32BE(payload?.length ?? 0, 28);
  let crc = crc32c(h.subarray(0, 32));
  if (payload !== undefined) crc = crc32c(payload, crc);
  h.writeUInt32BE(crc, 32);
  return h;
}

export type DecodeResult =
  | { readonly ok: true; readonly record: ChangeRecord; readonly bytes: number }
  /** Not enough bytes for a whole record: a torn tail if this is the end of the file. */
  | { readonly ok: false; readonly reason: 'short' }
  | { readonly ok: false; readonly reason: 'invalid'; readonly detail: string };

/**
 * Decodes the record at `at`. `data` of a decoded write is a view into `b`. Every field is checked
 * before the payload is touched: magic, kind, lengths against `maxRecordBytes`, checksum.
 */
export function decodeRecord(b: Buffer, at: number, maxRecordBytes: number): DecodeResult {
  if (b.length - at < RECORD_HEADER_BYTES) return { ok: false, reason: 'short' };
  if (b.readUInt32BE(at) !== RECORD_MAGIC) return { ok: false, reason: 'invalid', detail: 'bad record magic' };
  const kind = b.readUInt8(at + 4);
  const length = b.readUInt32BE(at + 24);
  const payloadLength = b.readUInt32BE(at + 28);
  if (kind !== RecordKind.WRITE && kind !== RecordKind.ZERO && kind !== RecordKind.TRIM) {
    return { ok: false, reason: 'invalid', detail: `unknown record kind ${kind}` };
  }
  const expectPayload = kind === RecordKind.WRITE ? length : 0;
  if (payloadLength !== expectPayload) return { ok: false, reason: 'invalid', detail: 'payload length does not match kind' };
  if (payloadLength > maxRecordBytes) return { ok: false, reason: 'invalid', detail: `payload of ${payloadLength} bytes exceeds the limit` };
  const end = at + RECORD_HEADER_BYTES + payloadLength;
  if (b.length < end) return { ok: false, reason: 'short' };
  const payload = b.subarray(at + RECORD_HEADER_BYTES, end);
  let crc = crc32c(b.subarray(at, at + 32));
  if (payloadLength > 0) crc = crc32c(payload, crc);
  if (crc !== b.readUInt32BE(at + 32)) return { ok: false, reason: 'invalid', detail: 'record checksum mismatch' };
  const base = { lsn: readU64(b, at + 8), kind: kind, disk: b.readUInt16BE(at + 6), offset: readU64(b, at + 16), length };
  const record: ChangeRecord = kind === RecordKind.WRITE ? { ...base, data: payload } : base;
  return { ok: true, record, bytes: RECORD_HEADER_BYTES + payloadLength };
}
