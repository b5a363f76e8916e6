import { compress, uncompressSync } from 'lz4-napi';
import {
  isGroupKind,
  isMarkerKind,
  isRecordKind,
  MAX_GROUP_RECORD_BYTES,
  RecordKind,
  type ChangeRecord,
} from '../change-record.js';
import { ErrorCode, SrError } from '../errors.js';
import { recordChecksum } from '../record-checksum.js';
import { encodeBulkMessage } from './codec.js';
import type { WireLimits } from './limits.js';
import type { Batch, DiskInfo, Progress } from './messages.js';

/**
 * One entry per record in a batch's `recs` (big-endian); the LSN is `first` + index.
 *   0 u8 kind (change-record.ts)   1 u8 0   2 u16 disk   4 u32 CRC-32C (recordChecksum)   8 u64 offset
 *   16 u32 length   20 u32 payload bytes of a group record (0 for every other kind)   24 f64 capture time (ms)
 * A WRITE's payload is `length` bytes, a group record's the count at 20; both travel in `data`.
 */
export const RECORD_ENTRY_BYTES = 32;

/** Payloads smaller than this are not worth a compression call. */
const MIN_COMPRESS_BYTES = 512;

export interface BatchHeader {
  readonly vm: string;
  readonly generation: string;
  readonly progress?: Progress;
  /** false sends the payload uncompressed without trying lz4 (the sender knows it does not pay). Default true. */
  readonly tryCompress?: boolean;
}

/**
 * Memory reused by one sender's consecutive {@link encodeBatch} calls for joining payloads: a fresh
 * multi-megabyte buffer per batch counts as external memory to V8 and triggers full collections.
 * Calls sharing a scratch must not overlap (await each before the next).
 */
export class BatchScratch {
  private buf = Buffer.alloc(0);

  take(n: number): Buffer {
    if (this.buf.length < n) this.buf = Buffer.allocUnsafeSlow(n);
    return this.buf.subarray(0, n);
  }
}

/**
 * Builds a batch message from consecutive records. Payloads are lz4-compressed when that makes them
 * smaller; random data travels as is rather than paying for a decompression that saves nothing.
 * The frame owns its memory: records and `scratch` may be reused once this resolves.
 */
export async function encodeBatch(
  records: readonly ChangeRecord[],
  h: BatchHeader,
  scratch?: BatchScratch,
): Promise<{ frame: Buffer; raw: number; compressed: boolean }> {
  const first = records[0]!.lsn;
  const recs = Buffer.allocUnsafe(records.length * RECORD_ENTRY_BYTES);
  const payloads: Buffer[] = [];
  let raw = 0;
  records.forEach((r, i) => {
    if (r.lsn !== first + i)
      throw new SrError(ErrorCode.SEQUENCE, `batch records must be consecutive: ${r.lsn} after ${first + i - 1}`);
    const at = i * RECORD_ENTRY_BYTES;
    recs.writeUInt8(r.kind, at);
    recs.writeUInt8(0, at + 1);
    recs.writeUInt16BE(r.disk, at + 2);
    recs.writeUInt32BE(r.crc ?? recordChecksum(r, r.data), at + 4);
    recs.writeUInt32BE(Math.floor(r.offset / 0x1_0000_0000), at + 8);
    recs.writeUInt32BE(r.offset >>> 0, at + 12);
    recs.writeUInt32BE(r.length, at + 16);
    const group = isGroupKind(r.kind);
    recs.writeUInt32BE(group ? (r.data?.length ?? 0) : 0, at + 20);
    recs.writeDoubleBE(r.time ?? 0, at + 24);
    if ((r.kind === RecordKind.WRITE || group) && r.data !== undefined) {
      payloads.push(r.data);
      raw += r.data.length;
    }
  });
  const plain =
    payloads.length === 1 ? payloads[0]! : joinInto(scratch?.take(raw) ?? Buffer.allocUnsafe(raw), payloads);
  let codec: 'lz4' | 'none' = 'none';
  let data: Uint8Array = plain;
  if (raw >= MIN_COMPRESS_BYTES && h.tryCompress !== false) {
    const packed = await compress(plain);
    if (packed.length < raw * 0.9) {
      codec = 'lz4';
      data = packed;
    }
  }
  const msg: Batch = {
    t: 'batch',
    vm: h.vm,
    generation: h.generation,
    first,
    count: records.length,
    recs,
    codec,
    raw,
    data,
    ...(h.progress ? { progress: h.progress } : {}),
  };
  return { frame: encodeBulkMessage(msg, recs.length + data.length), raw, compressed: codec === 'lz4' };
}

function joinInto(target: Buffer, parts: readonly Buffer[]): Buffer {
  let at = 0;
  for (const p of parts) at += p.copy(target, at);
  return target;
}

/** The LSN of the last record of a batch. */
export function lastLsn(b: Batch): number {
  return b.first + b.count - 1;
}

/**
 * Checks a batch's shape against the limits from declared sizes only, before anything is
 * decompressed: record count, entry table size, payload size, lz4 size prefix.
 */
export function checkBatchShape(b: Batch, limits: WireLimits): void {
  if (b.count > limits.maxBatchRecords)
    throw new SrError(ErrorCode.LIMIT, `batch of ${b.count} records exceeds maxBatchRecords ${limits.maxBatchRecords}`);
  if (b.recs.length !== b.count * RECORD_ENTRY_BYTES)
    throw new SrError(ErrorCode.PROTOCOL, `batch record table is ${b.recs.length} bytes for ${b.count} records`);
  if (b.raw > limits.maxBatchRawBytes)
    throw new SrError(
      ErrorCode.LIMIT,
      `batch payload of ${b.raw} bytes exceeds maxBatchRawBytes ${limits.maxBatchRawBytes}`,
    );
  if (b.codec === 'none' && b.data.length !== b.raw)
    throw new SrError(ErrorCode.PROTOCOL, `uncompressed payload is ${b.data.length} bytes, declared ${b.raw}`);
  if (b.codec === 'lz4') {
    if (b.data.length < 4) throw new SrError(ErrorCode.PROTOCOL, 'lz4 payload shorter than its size prefix');
    const declared = Buffer.from(b.data.buffer, b.data.byteOffset, 4).readUInt32LE(0);
    if (declared !== b.raw)
      throw new SrError(ErrorCode.PROTOCOL, `lz4 payload declares ${declared} bytes, batch declares ${b.raw}`);
  }
  if (b.first + b.count - 1 > Number.MAX_SAFE_INTEGER) throw new SrError(ErrorCode.PROTOCOL, 'batch LSNs overflow');
}

/**
 * Decodes and verifies every record of a batch: kinds, sizes, disk index and bounds against `disks`,
 * payload sizes adding up, and each record's checksum. Throws (with a stable code) on the first
 * failure, so a caller applies all of a batch or none of it. Record payloads are views into one
 * decompressed buffer.
 */
export function decodeBatch(b: Batch, disks: readonly DiskInfo[], limits: WireLimits): ChangeRecord[] {
  checkBatchShape(b, limits);
  const recs = Buffer.from(b.recs.buffer, b.recs.byteOffset, b.recs.length);
  const data = Buffer.from(b.data.buffer, b.data.byteOffset, b.data.length);
  let payload: Buffer;
  try {
    payload = b.codec === 'lz4' ? uncompressSync(data) : data;
  } catch (err) {
    throw new SrError(ErrorCode.PROTOCOL, `lz4 payload does not decompress: ${(err as Error).message}`);
  }
  if (payload.length !== b.raw)
    throw new SrError(ErrorCode.PROTOCOL, `payload decompressed to ${payload.length} bytes, declared ${b.raw}`);
  const out: ChangeRecord[] = new Array<ChangeRecord>(b.count);
  let pos = 0;
  for (let i = 0; i < b.count; i++) {
    const at = i * RECORD_ENTRY_BYTES;
    const kind = recs.readUInt8(at);
    const lsn = b.first + i;
    if (!isRecordKind(kind)) throw new SrError(ErrorCode.PROTOCOL, `record ${lsn}: unknown kind ${kind}`);
    const disk = recs.readUInt16BE(at + 2);
    const offset = recs.readUInt32BE(at + 8) * 0x1_0000_0000 + recs.readUInt32BE(at + 12);
    const length = recs.readUInt32BE(at + 16);
    const size = disks[disk]?.size;
    if (size === undefined)
      throw new SrError(ErrorCode.BOUNDS, `record ${lsn}: disk index ${disk}, the VM has ${disks.length} disks`);
    const groupBytes = recs.readUInt32BE(at + 20);
    if (groupBytes !== 0 && !isGroupKind(kind))
      throw new SrError(
        ErrorCode.PROTOCOL,
        `record ${lsn}: a ${kind} record declares ${groupBytes} group payload bytes`,
      );
    if (isMarkerKind(kind)) {
      if (length !== 0) throw new SrError(ErrorCode.PROTOCOL, `record ${lsn}: marker with length ${length}`);
    } else if (offset + length > size)
      throw new SrError(
        ErrorCode.BOUNDS,
        `record ${lsn}: bytes ${offset}+${length} past the end of disk ${disks[disk]!.id} (${size})`,
      );
    let rec: ChangeRecord = {
      lsn,
      kind,
      disk,
      offset,
      length,
      crc: recs.readUInt32BE(at + 4),
      time: recs.readDoubleBE(at + 24),
    };
    if (kind === RecordKind.WRITE) {
      if (length > limits.maxRecordBytes)
        throw new SrError(ErrorCode.LIMIT, `record ${lsn}: ${length} bytes exceeds maxRecordBytes`);
      if (pos + length > payload.length)
        throw new SrError(ErrorCode.PROTOCOL, `record ${lsn}: payload runs past the batch data`);
      rec = { ...rec, data: payload.subarray(pos, pos + length) };
      pos += length;
    } else if (isGroupKind(kind)) {
      if (groupBytes === 0 || groupBytes > MAX_GROUP_RECORD_BYTES)
        throw new SrError(ErrorCode.PROTOCOL, `record ${lsn}: group record of ${groupBytes} bytes`);
      if (pos + groupBytes > payload.length)
        throw new SrError(ErrorCode.PROTOCOL, `record ${lsn}: payload runs past the batch data`);
      rec = { ...rec, data: payload.subarray(pos, pos + groupBytes) };
      pos += groupBytes;
    }
    if (recordChecksum(rec, rec.data) !== rec.crc)
      throw new SrError(ErrorCode.CHECKSUM, `record ${lsn}: checksum mismatch`);
    out[i] = rec;
  }
  if (pos !== payload.length)
    throw new SrError(ErrorCode.PROTOCOL, `batch carries ${payload.length - pos} payload bytes no record claims`);
  return out;
}
