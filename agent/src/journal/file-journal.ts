import fs from 'node:fs';
import fsp from 'node:fs/promises';
import {
  ErrorCode,
  SrError,
  closeFd,
  fdatasync,
  fsyncDir,
  pwritev,
  pwritevSync,
  type ChangeRecord,
} from '@site-recovery/shared';
import type { Journal, JournalCursor, JournalStats } from './journal.js';
import { FileJournalCursor } from './cursor.js';
import { JournalTail } from './tail.js';
import { DirectAppender } from './direct-append.js';
import { SEGMENT_HEADER_BYTES, decodeRecord, encodeRecordHeader } from './format.js';
import { corrupt, createSegment, type Segment } from './segment.js';
import { applyOpenPlan, planOpen } from './open-plan.js';
import { newBatch, type Batch } from './batch.js';
import { JournalRoom } from './room.js';
import {
  DEFAULT_DIRECT_WRITE_MIN_BYTES,
  DEFAULT_INLINE_WRITE_MAX_BYTES,
  DEFAULT_JOURNAL_MAX_BYTES,
  DEFAULT_MAX_RECORD_BYTES,
  DEFAULT_TAIL_CACHE_BYTES,
  segmentBytesFor,
  type FileJournalOptions,
} from './file-journal-options.js';

export type { FileJournalOptions } from './file-journal-options.js';

/**
 * Journal in append-only segment files. Appends made in the same tick are written with one
 * vectored write (group commit); `sync` calls that overlap share one fdatasync.
 */
export class FileJournal implements Journal {
  private segments: Segment[];
  private fd: number;
  /** Descriptors of finished segments not yet fsynced. */
  private unsynced: number[] = [];
  /** A segment was created since the last sync, so the directory owes an fsync. */
  private dirUnsynced = false;
  private batch: Batch | undefined;
  private appendedLsn: number;
  private writtenLsn: number;
  private syncedLsn: number;
  private syncing: Promise<void> | undefined;
  private failure: Error | undefined;
  private readonly segmentBytes: number;
  private readonly maxRecordBytes: number;
  private readonly inlineMax: number;
  private readonly maxBytes: number;
  private readonly directMin: number;
  private readonly direct: DirectAppender;
  private readonly tail: JournalTail;
  private totalBytes: number;
  private openRepairs: readonly string[] = [];
  private readonly roomGate = new JournalRoom();
  private writtenWaiters: (() => void)[] = [];

  private constructor(
    private readonly dir: string,
    segments: Segment[],
    fd: number,
    lastLsn: number,
    options: FileJournalOptions,
  ) {
    this.segments = segments;
    this.fd = fd;
    this.appendedLsn = this.writtenLsn = this.syncedLsn = lastLsn;
    this.maxRecordBytes = options.maxRecordBytes ?? DEFAULT_MAX_RECORD_BYTES;
    this.inlineMax = options.inlineWriteMaxBytes ?? DEFAULT_INLINE_WRITE_MAX_BYTES;
    this.maxBytes = options.maxBytes ?? DEFAULT_JOURNAL_MAX_BYTES;
    this.segmentBytes = options.segmentBytes ?? segmentBytesFor(this.maxBytes);
    this.directMin = options.directWriteMinBytes ?? DEFAULT_DIRECT_WRITE_MIN_BYTES;
    this.tail = new JournalTail(options.tailCacheBytes ?? DEFAULT_TAIL_CACHE_BYTES);
    this.direct = new DirectAppender(options.direct, (file, at, bufs) => this.noteWritten(file, at, bufs));
    this.totalBytes = segments.reduce((n, x) => n + x.bytes, 0);
  }

  /**
   * Opens (or creates) the journal in `dir`: validates every segment, cuts the unsynced tail a crash
   * may have torn, and refuses (SR_JOURNAL_CORRUPT) damage where the journal was known synced
   * (open-plan.ts). What it cut is listed in `repairs`.
   */
  static async open(dir: string, options: FileJournalOptions = {}): Promise<FileJournal> {
    await fsp.mkdir(dir, { recursive: true });
    const syncedThrough = options.syncedThroughLsn ?? Infinity;
    const plan = await planOpen(dir, options.maxRecordBytes ?? DEFAULT_MAX_RECORD_BYTES, syncedThrough);
    await applyOpenPlan(dir, plan, syncedThrough);
    const segments = plan.segments;
    const lastLsn = plan.lastLsn;
    let fd: number;
    if (segments.length === 0) {
      const seg = await createSegment(dir, lastLsn + 1, true);
      segments.push(seg.segment);
      fd = seg.fd;
    } else {
      const last = segments[segments.length - 1]!;
      fd = fs.openSync(last.file, 'r+');
    }
    const journal = new FileJournal(dir, segments, fd, lastLsn, options);
    journal.openRepairs = plan.repairs;
    journal.probeDirect();
    return journal;
  }

  /** What opening cut or removed, and why (empty after a clean stop). */
  get repairs(): readonly string[] {
    return this.openRepairs;
  }

  get lastLsn(): number {
    return this.appendedLsn;
  }

  get firstLsn(): number {
    return this.segments[0]?.firstLsn ?? this.appendedLsn + 1;
  }

  append(record: ChangeRecord): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failed());
    if (record.lsn !== this.appendedLsn + 1) {
      return Promise.reject(corrupt(`append of LSN ${record.lsn} after ${this.appendedLsn} would leave a gap`));
    }
    this.appendedLsn = record.lsn;
    const b = (this.batch ??= newBatch());
    const header = encodeRecordHeader(record);
    b.bufs.push(header);
    b.bytes += header.length;
    if (record.data !== undefined && record.data.length > 0) {
      b.bufs.push(record.data);
      b.bytes += record.data.length;
    }
    b.lastLsn = record.lsn;
    if (!this.writerRunning) {
      this.writerRunning = true;
      setImmediate(() => void this.writer());
    }
    return b.done;
  }

  private writerRunning = false;

  /**
   * The single writer: takes everything appended since its last write and writes it with one
   * vectored write, until nothing is left. Appends that arrive while a write is in progress join
   * the next one, so the number of writes adapts to the load (group commit).
   */
  private async writer(): Promise<void> {
    while (this.batch !== undefined) {
      const b = this.batch;
      this.batch = undefined;
      try {
        if (this.failure !== undefined) throw this.failed();
        const seg = this.segments[this.segments.length - 1]!;
        // Segments are rolled between writes, so a record never spans two files.
        // A segment from before pads existed is finished buffered: an older agent can still read it.
        if (b.bytes >= this.directMin && this.direct.active && seg.version >= 2) {
          const { direct, end } = await this.direct.append(seg.file, this.fd, b.bufs, seg.bytes);
          this.totalBytes += end - seg.bytes;
          seg.bytes = end;
          if (!direct) await this.writeBuffered(seg, b);
        } else {
          await this.writeBuffered(seg, b);
        }
        this.writtenLsn = b.lastLsn;
        if (seg.bytes >= this.segmentBytes) await this.roll();
        b.resolve();
      } catch (err) {
        this.fail(err);
        b.reject(this.failed());
      }
      const waiters = this.drainWaiters;
      this.drainWaiters = [];
      for (const w of waiters) w();
      const readers = this.writtenWaiters;
      this.writtenWaiters = [];
      for (const w of readers) w();
    }
    this.writerRunning = false;
  }

  /** Learns now whether this filesystem takes O_DIRECT, so the status is right before the first large write. */
  private probeDirect(): void {
    const seg = this.segments[this.segments.length - 1]!;
    if (Number.isFinite(this.directMin) && seg.version >= 2) this.direct.probe(seg.file);
  }

  private async writeBuffered(seg: Segment, b: Batch): Promise<void> {
    for (let i = 0; i < b.bufs.length; i += 1024) {
      const part = b.bufs.length <= 1024 ? b.bufs : b.bufs.slice(i, i + 1024); // IOV_MAX
      if (b.bytes <= this.inlineMax) pwritevSync(this.fd, part, seg.bytes);
      else await pwritev(this.fd, part, seg.bytes);
      this.noteWritten(seg.file, seg.bytes, part);
      const n = part.length === b.bufs.length ? b.bytes : part.reduce((sum, x) => sum + x.length, 0);
      seg.bytes += n;
      this.totalBytes += n;
    }
  }

  /** Resolves after the writer's next completed write (immediately when it is idle). */
  private drained(): Promise<void> {
    if (this.batch === undefined && !this.writerRunning) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  private drainWaiters: (() => void)[] = [];

  /**
   * Starts the next segment. Its header and directory entry are synced by the next `sync`, not here:
   * a roll is on the writer's path, and syncing there cost about 11 ms every 64 MiB on the sequential
   * benchmark, while nothing in the new segment counts as durable before a sync anyway.
   */
  private async roll(): Promise<void> {
    const next = await createSegment(this.dir, this.writtenLsn + 1, false);
    this.totalBytes += next.segment.bytes;
    // Switched in one step, before any await: a sync starting meanwhile must see either the old
    // segment as current or it among the unsynced, never both.
    this.unsynced.push(this.fd);
    this.dirUnsynced = true;
    this.fd = next.fd;
    this.segments.push(next.segment);
    await this.direct.close();
  }

  async sync(): Promise<void> {
    const target = this.appendedLsn;
    while (this.writtenLsn < target && this.failure === undefined) await this.drained();
    if (this.failure !== undefined) throw this.failed();
    while (this.syncedLsn < target) {
      if (this.syncing === undefined) {
        const upto = this.writtenLsn;
        this.syncing = this.syncOnce(upto).finally(() => (this.syncing = undefined));
      }
      await this.syncing;
    }
  }

  private async syncOnce(upto: number): Promise<void> {
    try {
      // Taken together before any await: a roll during this sync moves the segment holding `upto`
      // into `unsynced`, and `this.fd` would then name a segment after it.
      const old = this.unsynced;
      const current = this.fd;
      const dir = this.dirUnsynced;
      this.unsynced = [];
      this.dirUnsynced = false;
      for (const fd of old) {
        await fdatasync(fd);
        await closeFd(fd);
      }
      await fdatasync(current);
      if (dir) await fsyncDir(this.dir);
      this.syncedLsn = Math.max(this.syncedLsn, upto);
    } catch (err) {
      this.fail(err);
      throw this.failed();
    }
  }

  async *read(from: number): AsyncIterable<ChangeRecord> {
    await this.sync().catch(() => undefined); // make what was appended visible in the files
    for (const [i, seg] of this.segments.entries()) {
      const nextFirst = this.segments[i + 1]?.firstLsn;
      if (nextFirst !== undefined && nextFirst <= from) continue;
      const buf = await fsp.readFile(seg.file);
      let at = SEGMENT_HEADER_BYTES;
      while (at < seg.bytes && at < buf.length) {
        const r = decodeRecord(buf, at, this.maxRecordBytes);
        if (!r.ok) throw corrupt(`${seg.file} at byte ${at}: ${r.reason === 'short' ? 'truncated record' : r.detail}`);
        if (r.record !== undefined && r.record.lsn >= from) yield r.record;
        at += r.bytes;
      }
    }
  }

  cursor(from: number): JournalCursor {
    this.cursors++;
    return new FileJournalCursor(this, from, this.maxRecordBytes);
  }

  /** Open cursors: the tail is kept only while someone reads (an agent without a cache-store has no reader). */
  private cursors = 0;

  /** For cursors: this one is closed. */
  cursorClosed(): void {
    if (--this.cursors === 0) this.tail.clear();
  }

  private noteWritten(file: string, at: number, bufs: readonly Buffer[]): void {
    if (this.cursors > 0) this.tail.wrote(file, at, bufs);
  }

  /** For cursors: the segments as they stand (the last one may still grow). */
  segmentList(): readonly Segment[] {
    return this.segments;
  }

  /** For cursors: fills `into` from memory when the newest bytes of `file` at `pos` are there. */
  readCached(file: string, pos: number, into: Buffer): boolean {
    return this.tail.read(file, pos, into);
  }

  /** For cursors: resolves after the next write lands (at once if the journal has failed or closed). */
  whenWritten(): Promise<void> {
    if (this.failure !== undefined) return Promise.resolve();
    return new Promise((resolve) => this.writtenWaiters.push(resolve));
  }

  get written(): number {
    return this.writtenLsn;
  }

  async releaseThrough(lsn: number): Promise<void> {
    while (this.segments.length > 1 && this.segments[1]!.firstLsn - 1 <= lsn) {
      const seg = this.segments.shift()!;
      await fsp.unlink(seg.file).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
      });
      this.totalBytes -= seg.bytes;
    }
    this.roomGate.wake(this.totalBytes >= this.maxBytes);
  }

  room(): Promise<void> | undefined {
    return this.roomGate.wait(this.atCap);
  }

  get atCap(): boolean {
    return this.totalBytes >= this.maxBytes;
  }

  stopWaiting(): void {
    this.roomGate.stop();
  }

  stats(): JournalStats {
    return {
      firstLsn: this.firstLsn,
      lastLsn: this.appendedLsn,
      syncedLsn: this.syncedLsn,
      segments: this.segments.length,
      bytes: this.totalBytes,
      failed: this.failure?.message,
      stalled: this.roomGate.waiting,
      maxBytes: this.maxBytes,
      segmentBytes: this.segmentBytes,
      directWrites: Number.isFinite(this.directMin) && this.direct.active,
    };
  }

  async close(): Promise<void> {
    if (this.failure === undefined) await this.sync();
    for (const fd of this.unsynced) await closeFd(fd);
    this.unsynced = [];
    await this.direct.close();
    await closeFd(this.fd);
    this.fail(new SrError(ErrorCode.SHUTTING_DOWN, 'journal is closed'));
  }

  private fail(err: unknown): void {
    this.failure ??= err instanceof Error ? err : new Error(String(err));
    this.tail.clear();
    const readers = this.writtenWaiters;
    this.writtenWaiters = [];
    for (const w of readers) w();
  }

  private failed(): SrError {
    const f = this.failure!;
    if (f instanceof SrError) return f;
    const code = (f as NodeJS.ErrnoException).code === 'ENOSPC' ? ErrorCode.NO_SPACE : ErrorCode.IO;
    return new SrError(
      code,
      `journal in ${this.dir} failed and takes no more writes until the agent restarts: ${f.message}`,
      { cause: f },
    );
  }
}
