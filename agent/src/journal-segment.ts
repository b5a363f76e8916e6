import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { ErrorCode, SrError, fdatasync, fsyncDir, pwritev } from '@site-recovery/shared';
import { SEGMENT_HEADER_BYTES, SEGMENT_VERSION, decodeRecord, decodeSegmentHeader, encodeSegmentHeader } from './journal-format.js';
import { segmentFileName } from './names.js';

/** One segment file of the journal; `bytes` counts what is written (and readable) so far. */
export interface Segment {
  readonly firstLsn: number;
  readonly file: string;
  bytes: number;
  /** Format version of the file: pads (and so direct writes) only go into version 2 and later. */
  readonly version: number;
}

export function corrupt(message: string): SrError {
  return new SrError(ErrorCode.JOURNAL_CORRUPT, message);
}

export async function createSegment(dir: string, firstLsn: number): Promise<{ segment: Segment; fd: number }> {
  const file = path.join(dir, segmentFileName(firstLsn));
  const fd = fs.openSync(file, 'wx+');
  const header = encodeSegmentHeader(firstLsn);
  await pwritev(fd, [header], 0);
  await fdatasync(fd);
  await fsyncDir(dir);
  return { segment: { firstLsn, file, bytes: header.length, version: SEGMENT_VERSION }, fd };
}

export interface SegmentScan {
  firstLsn: number;
  version: number;
  lastLsn: number;
  records: number;
  bytes: number;
  truncateTo: number | undefined;
}

/** Validates one segment; `undefined` when it was a half-created newest segment and was removed. */
export async function scanSegment(file: string, maxRecordBytes: number, isLast: boolean): Promise<SegmentScan | undefined> {
  const buf = await fsp.readFile(file);
  if (isLast && buf.length < SEGMENT_HEADER_BYTES) {
    // Crashed while creating the segment: nothing in it was ever acknowledged.
    await fsp.unlink(file);
    return undefined;
  }
  const { firstLsn, version } = decodeSegmentHeader(buf, file);
  let at = SEGMENT_HEADER_BYTES;
  let expect = firstLsn;
  let records = 0;
  while (at < buf.length) {
    const r = decodeRecord(buf, at, maxRecordBytes);
    const bad = !r.ok ? (r.reason === 'short' ? 'truncated record' : r.detail) : r.record !== undefined && r.record.lsn !== expect ? `LSN ${r.record.lsn} where ${expect} was expected` : undefined;
    if (bad !== undefined) {
      // Only the tail of the newest segment may be torn: that is where a crash interrupts a write.
      if (isLast) return { firstLsn, version, lastLsn: expect - 1, records, bytes: at, truncateTo: at };
      throw corrupt(`${file} at byte ${at}: ${bad}`);
    }
    if (r.ok) at += r.bytes;
    if (r.ok && r.record === undefined) continue; // a pad
    expect++;
    records++;
  }
  return { firstLsn, version, lastLsn: expect - 1, records, bytes: at, truncateTo: undefined };
}
