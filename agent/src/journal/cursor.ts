import fs from 'node:fs';
import { ErrorCode, SrError, closeFd, preadInto, type ChangeRecord } from '@site-recovery/shared';
import type { FileJournal } from './file-journal.js';
import type { JournalCursor } from './journal.js';
import { RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, decodeRecord, isPadAt, padLength } from './format.js';
import { corrupt, type Segment } from './segment.js';
import { DIRECT_IO_ALIGNMENT, alignUp, allocAligned, openDirect } from '@site-recovery/shared';

/**
 * Reads from the files at least this large bypass the page cache (O_DIRECT). A shipper that fell
 * behind the in-memory tail reads what the journal wrote past the page cache; through it, every read
 * byte would take a fresh page, which on this VM costs a host fault, and the shipper fell further
 * behind the more it read (bench:e2e max mode).
 */
const DIRECT_READ_MIN_BYTES = 256 * 1024;

/**
 * Reads a {@link FileJournal} from an LSN onward, following it as it grows. Records come out of the
 * journal's in-memory tail (its newest 32 MiB) or else the segment files, so the shipper holds no
 * copy of its own however far behind it falls. Reads go into one buffer reused from call to call, so
 * record payloads are valid only until the next `next` (see JournalCursor).
 */
export class FileJournalCursor implements JournalCursor {
  private segment: Segment | undefined;
  private fd: number | undefined;
  private pos = 0;
  private closed = false;
  /** Wakes a `next` waiting for the journal to grow when the cursor is closed. */
  private wake: (() => void) | undefined;
  /** Grows to the largest read so far; fresh megabyte buffers per read cost full GCs (see PayloadPool). */
  private scratch = Buffer.alloc(0);
  /** O_DIRECT descriptor of the current segment; undefined once the filesystem refused one. */
  private directFd: number | undefined;
  private directRefused = false;
  /** Page-aligned buffer of the direct reads, grown like `scratch`. */
  private aligned: Buffer | undefined;

  constructor(
    private readonly journal: FileJournal,
    private nextLsn: number,
    private readonly maxRecordBytes: number,
  ) {}

  async next(maxBytes: number): Promise<ChangeRecord[]> {
    for (;;) {
      if (this.closed) return [];
      if (this.nextLsn > this.journal.written) {
        await Promise.race([this.journal.whenWritten(), new Promise<void>((resolve) => (this.wake = resolve))]);
        this.wake = undefined;
        const failed = this.journal.stats().failed;
        if (failed !== undefined && this.nextLsn > this.journal.written) {
          if (this.closed) return [];
          // Nothing more will be written: an empty answer would have the reader ask again at once, forever.
          throw new SrError(
            ErrorCode.IO,
            `the journal failed; nothing after LSN ${this.nextLsn - 1} will come: ${failed}`,
          );
        }
        continue;
      }
      await this.position();
      const seg = this.segment!;
      const avail = seg.bytes - this.pos;
      if (avail <= 0) {
        // This segment is exhausted; the records we want are in the next one.
        await this.moveTo(undefined);
        continue;
      }
      const head = await this.readAt(Buffer.allocUnsafe(Math.min(avail, RECORD_HEADER_BYTES)), this.pos);
      if (isPadAt(head, 0)) {
        this.pos += padBytes(head, seg, this.pos);
        continue;
      }
      const payload = head.length >= RECORD_HEADER_BYTES ? head.readUInt32BE(28) : 0;
      const want = Math.min(avail, Math.max(maxBytes, RECORD_HEADER_BYTES + payload));
      if (this.scratch.length < want) this.scratch = Buffer.allocUnsafeSlow(want);
      const buf = await this.readAt(this.scratch.subarray(0, want), this.pos);
      const out: ChangeRecord[] = [];
      let at = 0;
      while (at < buf.length) {
        const r = decodeRecord(buf, at, this.maxRecordBytes);
        if (!r.ok) {
          if (r.reason === 'short' && at > 0) break; // the rest comes with the next read
          throw corrupt(
            `${seg.file} at byte ${this.pos + at}: ${r.reason === 'short' ? 'truncated record' : r.detail}`,
          );
        }
        at += r.bytes;
        if (r.record === undefined) continue; // a pad
        if (r.record.lsn !== this.nextLsn)
          throw corrupt(`${seg.file}: LSN ${r.record.lsn} where ${this.nextLsn} was expected`);
        out.push(r.record);
        this.nextLsn++;
      }
      this.pos += at;
      if (out.length === 0) continue; // only pads so far
      return out;
    }
  }

  /** Bytes at `pos` of the current segment: from the journal's in-memory tail when it has them. */
  private async readAt(into: Buffer, pos: number): Promise<Buffer> {
    if (this.journal.readCached(this.segment!.file, pos, into)) return into;
    if (
      into.length >= DIRECT_READ_MIN_BYTES &&
      this.directFd !== undefined &&
      (await this.readDirect(this.directFd, into, pos))
    )
      return into;
    return preadInto(this.fd!, into, pos);
  }

  /** Fills `into` from `pos` with one aligned O_DIRECT read; false when the file ends first (the caller reads it buffered). */
  private async readDirect(fd: number, into: Buffer, pos: number): Promise<boolean> {
    const start = pos - (pos % DIRECT_IO_ALIGNMENT);
    const length = alignUp(pos + into.length) - start;
    if (this.aligned === undefined || this.aligned.length < length) this.aligned = allocAligned(length);
    const buf = this.aligned;
    const n = await new Promise<number>((resolve, reject) =>
      fs.read(fd, buf, 0, length, start, (err, got) => (err ? reject(err) : resolve(got))),
    );
    if (n < pos - start + into.length) return false;
    buf.copy(into, 0, pos - start, pos - start + into.length);
    return true;
  }

  close(): void {
    if (!this.closed) this.journal.cursorClosed();
    this.closed = true;
    this.wake?.();
    for (const fd of [this.fd, this.directFd]) if (fd !== undefined) void closeFd(fd).catch(() => undefined);
    this.fd = this.directFd = undefined;
  }

  /** Opens the segment holding `nextLsn` and skips to it, unless already there. */
  private async position(): Promise<void> {
    const segs = this.journal.segmentList();
    let target: Segment | undefined;
    for (const s of segs) if (s.firstLsn <= this.nextLsn) target = s;
    if (target === undefined)
      throw corrupt(`LSN ${this.nextLsn} is no longer in the journal (first is ${segs[0]?.firstLsn ?? 'none'})`);
    if (target === this.segment) return;
    await this.moveTo(target);
    // Skip records before nextLsn (only when starting mid-segment).
    let lsn = target.firstLsn;
    while (lsn < this.nextLsn) {
      const head = await this.readAt(Buffer.allocUnsafe(RECORD_HEADER_BYTES), this.pos);
      if (isPadAt(head, 0)) {
        this.pos += padBytes(head, target, this.pos);
        continue;
      }
      this.pos += RECORD_HEADER_BYTES + head.readUInt32BE(28);
      lsn++;
    }
  }

  private async moveTo(target: Segment | undefined): Promise<void> {
    // Taken off the cursor before the closes are awaited: a `close` meanwhile must not close the same
    // numbers again, which by then may belong to another file (the journal's own segment, say).
    const fds = [this.fd, this.directFd];
    this.fd = this.directFd = undefined;
    this.segment = undefined;
    for (const fd of fds) if (fd !== undefined) await closeFd(fd);
    if (target === undefined || this.closed) return;
    this.fd = fs.openSync(target.file, 'r');
    if (!this.directRefused) {
      this.directFd = openDirect(target.file, fs.constants.O_RDONLY);
      this.directRefused = this.directFd === undefined; // then every read goes through the page cache
    }
    this.segment = target;
    this.pos = SEGMENT_HEADER_BYTES;
  }
}

/** Length of the pad whose header starts `head` (read at `pos` of `seg`), its checksum and bounds checked. */
function padBytes(head: Buffer, seg: Segment, pos: number): number {
  const bytes = padLength(head, 0);
  if (typeof bytes === 'string') throw corrupt(`${seg.file} at byte ${pos}: ${bytes}`);
  return bytes;
}
