import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { ErrorCode, SrError, fdatasync, fsyncDir, pwriteSync, pwritev } from '@site-recovery/shared';
import {
  SEGMENT_HEADER_BYTES,
  SEGMENT_VERSION,
  decodeRecord,
  decodeSegmentHeader,
  encodeSegmentHeader,
} from './format.js';
import { segmentFileName } from '../names.js';

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

/**
 * Creates the segment that starts at `firstLsn`. With `durable` its header and name are synced
 * before this returns; without, the caller owes an fdatasync of the file and an fsync of the
 * directory before it counts any record in it as durable (FileJournal does both in `sync`); a crash
 * before then can leave segments without a header past the last sync, which opening removes
 * (open-plan.ts).
 */
export async function createSegment(
  dir: string,
  firstLsn: number,
  durable: boolean,
): Promise<{ segment: Segment; fd: number }> {
  const file = path.join(dir, segmentFileName(firstLsn));
  const fd = fs.openSync(file, 'wx+');
  const header = encodeSegmentHeader(firstLsn);
  if (durable) {
    await pwritev(fd, [header], 0);
    await fdatasync(fd);
    await fsyncDir(dir);
  } else {
    pwriteSync(fd, header, 0); // 32 bytes into the page cache
  }
  return { segment: { firstLsn, file, bytes: header.length, version: SEGMENT_VERSION }, fd };
}

export interface SegmentScan {
  firstLsn: number;
  version: number;
  lastLsn: number;
  records: number;
  /** Length of the valid part: the whole file unless `damage` is set. */
  bytes: number;
  /** What is wrong at `bytes`, where the valid part ends (a torn or bad record); undefined when none. */
  damage: string | undefined;
}

/**
 * Reads and checks one segment; it changes nothing. `undefined` when the file has no header yet
 * (shorter than one, or all zeroes): created, but its header never reached the disk.
 */
export async function scanSegment(file: string, maxRecordBytes: number): Promise<SegmentScan | undefined> {
  const buf = await fsp.readFile(file);
  if (buf.length < SEGMENT_HEADER_BYTES || buf.subarray(0, SEGMENT_HEADER_BYTES).every((x) => x === 0))
    return undefined;
  const { firstLsn, version } = decodeSegmentHeader(buf, file);
  let at = SEGMENT_HEADER_BYTES;
  let expect = firstLsn;
  let records = 0;
  while (at < buf.length) {
    const r = decodeRecord(buf, at, maxRecordBytes);
    const bad = !r.ok
      ? r.reason === 'short'
        ? 'truncated record'
        : r.detail
      : r.record !== undefined && r.record.lsn !== expect
        ? `LSN ${r.record.lsn} where ${expect} was expected`
        : undefined;
    if (bad !== undefined) return { firstLsn, version, lastLsn: expect - 1, records, bytes: at, damage: bad };
    if (r.ok) at += r.bytes;
    if (r.ok && r.record === undefined) continue; // a pad
    expect++;
    records++;
  }
  return { firstLsn, version, lastLsn: expect - 1, records, bytes: at, damage: undefined };
}
