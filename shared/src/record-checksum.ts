import { crc32c } from './checksum.js';

/** Magic that opens the checksummed block of a record, in the journal and in the checksum alike. */
export const RECORD_MAGIC = 0x53524a52; // "SRJR"
export const RECORD_CANONICAL_BYTES = 32;

export interface RecordFields {
  readonly lsn: number;
  readonly kind: number;
  readonly disk: number;
  readonly offset: number;
  readonly length: number;
}

/**
 * Writes the canonical 32-byte block a record's checksum covers (it is also the first 32 bytes of a
 * journal record header): magic, kind, 0, disk, LSN, offset, length, payload length. Big-endian.
 */
export function writeCanonical(b: Buffer, at: number, r: RecordFields, payloadLength: number): void {
  b.writeUInt32BE(RECORD_MAGIC, at);
  b.writeUInt8(r.kind, at + 4);
  b.writeUInt8(0, at + 5);
  b.writeUInt16BE(r.disk, at + 6);
  b.writeUInt32BE(Math.floor(r.lsn / 0x1_0000_0000), at + 8);
  b.writeUInt32BE(r.lsn >>> 0, at + 12);
  b.writeUInt32BE(Math.floor(r.offset / 0x1_0000_0000), at + 16);
  b.writeUInt32BE(r.offset >>> 0, at + 20);
  b.writeUInt32BE(r.length, at + 24);
  b.writeUInt32BE(payloadLength, at + 28);
}

const scratch = Buffer.alloc(RECORD_CANONICAL_BYTES);

/**
 * The record's CRC-32C: over the canonical block, continued over the payload. Computed once when the
 * agent captures a write; the journal stores it, the stream carries it, and the processor recomputes
 * it before applying, so the check is end to end.
 */
export function recordChecksum(r: RecordFields, data: Uint8Array | undefined): number {
  writeCanonical(scratch, 0, r, data?.length ?? 0);
  const crc = crc32c(scratch);
  return data !== undefined && data.length > 0 ? crc32c(data, crc) : crc;
}
