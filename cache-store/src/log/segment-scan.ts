import fsp from 'node:fs/promises';
import { closeFd, fdatasync, fsyncDir, pwrite, type Logger } from '@site-recovery/shared';
import { parseSegmentFileName, segmentFile } from '../names.js';
import { Segment } from './segment.js';
import { SEGMENT_HEADER_BYTES, decodeFrame, decodeSegmentHeader, encodeSegmentHeader } from './segment-format.js';
import { corrupt, openFd, storageError } from './storage-errors.js';
import type { VmMeta } from './vm-meta.js';

export type SegmentScan =
  /** The newest file holds no complete header: a crash while it was being created. */
  | { readonly kind: 'half-created' }
  /** A segment of another generation: left over from a replacement interrupted by a crash. */
  | { readonly kind: 'other-generation'; readonly generation: string }
  | {
      readonly kind: 'segment';
      readonly segment: Segment;
      /** Bytes of a torn tail cut off the newest segment (0: none). */
      readonly droppedBytes: number;
    };

/**
 * Reads one segment, checks every frame (checksum, LSNs following on from the header's) and indexes
 * it. In the newest segment the first bad or short frame and everything after it is a torn tail:
 * it is cut off (the file is truncated) since nothing after the last fsync was ever acknowledged.
 * Anywhere else damage refuses with SR_JOURNAL_CORRUPT naming the file and offset.
 */
export async function scanSegment(
  file: string,
  nameLsn: number,
  generation: string,
  maxFrameBytes: number,
  isNewest: boolean,
): Promise<SegmentScan> {
  const buf = await fsp.readFile(file);
  const header = decodeSegmentHeader(buf);
  if ('reason' in header) {
    if (isNewest && buf.length <= SEGMENT_HEADER_BYTES) return { kind: 'half-created' };
    throw corrupt(`${file}: ${header.reason}`);
  }
  if (header.generation !== generation) return { kind: 'other-generation', generation: header.generation };
  if (header.firstLsn !== nameLsn)
    throw corrupt(`${file}: header says first LSN ${header.firstLsn}, name says ${nameLsn}`);
  const segment = new Segment(file, header.firstLsn);
  let at = SEGMENT_HEADER_BYTES;
  let expect = header.firstLsn;
  while (at < buf.length) {
    const f = decodeFrame(buf, at, maxFrameBytes);
    const bad = !f.ok
      ? f.reason === 'short'
        ? 'truncated frame'
        : f.detail
      : f.first !== expect
        ? `frame starts at LSN ${f.first} where ${expect} was expected`
        : undefined;
    if (bad !== undefined || !f.ok) {
      if (!isNewest) throw corrupt(`${file} at byte ${at}: ${bad ?? 'bad frame'}`);
      await fsp.truncate(file, at);
      return { kind: 'segment', segment, droppedBytes: buf.length - at };
    }
    segment.add(f.first, f.first + f.count - 1, at, f.bytes);
    expect = f.first + f.count;
    at += f.bytes;
  }
  return { kind: 'segment', segment, droppedBytes: 0 };
}

/**
 * Scans every segment of a VM directory in LSN order and opens the newest for appending: cuts a
 * torn tail off the newest, deletes leftovers (segments of another generation, a half-created
 * newest segment), and refuses damage elsewhere, a break in the LSN sequence between segments, or
 * records missing between the applied LSN and the first segment.
 */
export async function loadSegments(
  dir: string,
  meta: VmMeta,
  maxFrameBytes: number,
  log: Logger | undefined,
): Promise<{ segments: Segment[]; fd: number }> {
  const names = (await fsp.readdir(dir))
    .map((n) => parseSegmentFileName(n))
    .filter((lsn): lsn is number => lsn !== undefined)
    .sort((a, b) => a - b);
  const segments: Segment[] = [];
  let removed = false;
  for (const [i, lsn] of names.entries()) {
    const file = segmentFile(dir, lsn);
    const scan = await scanSegment(file, lsn, meta.generation, maxFrameBytes, i === names.length - 1);
    if (scan.kind !== 'segment') {
      log?.info({ file, reason: scan.kind }, 'removing a segment left over by a crash');
      await fsp.unlink(file);
      removed = true;
      continue;
    }
    if (scan.droppedBytes > 0)
      log?.warn({ file, bytes: scan.droppedBytes }, 'cut off a torn tail (frames never acknowledged)');
    const prev = segments[segments.length - 1];
    const expect = prev === undefined ? undefined : prev.lastLsn + 1;
    if (expect !== undefined && scan.segment.firstLsn !== expect)
      throw corrupt(`${file}: starts at LSN ${lsn} but the previous segment ended at ${expect - 1}`);
    segments.push(scan.segment);
  }
  if (removed) await fsyncDir(dir);
  const first = segments[0];
  if (first !== undefined && first.firstLsn > meta.appliedLsn + 1) {
    throw corrupt(
      `${first.file}: records ${meta.appliedLsn + 1}..${first.firstLsn - 1} are missing (applied only up to ${meta.appliedLsn})`,
    );
  }
  if (segments.length === 0) {
    // Crash before the first segment of a new generation was created, or segments removed by hand.
    const created = await createSegment(dir, meta.appliedLsn + 1, meta.generation);
    return { segments: [created.segment], fd: created.fd };
  }
  return { segments, fd: await openFd(segments[segments.length - 1]!.file, 'r+') };
}

/**
 * Creates a segment file and makes its header and directory entry durable before any frame goes in.
 * An existing file of the name is overwritten: it can only lie past the durable end (a roll that
 * failed half-way), so nothing in it was ever acknowledged.
 */
export async function createSegment(
  dir: string,
  firstLsn: number,
  generation: string,
): Promise<{ segment: Segment; fd: number }> {
  const file = segmentFile(dir, firstLsn);
  const fd = await openFd(file, 'w+');
  try {
    await pwrite(fd, encodeSegmentHeader(firstLsn, generation), 0);
    await fdatasync(fd);
    await fsyncDir(dir);
  } catch (err) {
    await closeFd(fd).catch(() => undefined);
    throw storageError(err, `cannot create segment ${file}`);
  }
  return { segment: new Segment(file, firstLsn), fd };
}
