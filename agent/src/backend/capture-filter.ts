import { setTimeout as sleep } from 'node:timers/promises';
import { RecordKind, type ChangeRecord } from '@site-recovery/shared';
import { BackendError, Errno, type BlockBackend } from '@site-recovery/shared/nbd';
import type { BitmapMode } from '../bitmap/bitmap-mode.js';
import type { Journal } from '../journal/journal.js';
import type { WriteGate } from '../group/write-gate.js';
import { ImageSync } from './image-sync.js';
import { WriteOrder } from './write-order.js';

const ZERO_CHUNK = Buffer.alloc(64 * 1024);

/** Whether every byte of `b` is zero. */
export function isZero(b: Buffer): boolean {
  for (let at = 0; at < b.length; at += ZERO_CHUNK.length) {
    const n = Math.min(ZERO_CHUNK.length, b.length - at);
    if (b.compare(ZERO_CHUNK, 0, n, at, at + n) !== 0) return false;
  }
  return true;
}

/** A part of a chunk the initial copy journals: its bytes as a WRITE record, or a ZERO record when `zero`. */
export interface CopyRun {
  /** Byte offset in the chunk. */
  readonly start: number;
  readonly length: number;
  readonly zero: boolean;
}

/** Hands out the VM's log sequence numbers: one sequence across all of its disks. */
export class LsnSequence {
  constructor(private last: number) {}

  next(): number {
    return ++this.last;
  }

  get current(): number {
    return this.last;
  }

  /** A new generation: its LSNs start at 1 (see CaptureBackend.startOver for the rest of the cut). */
  restart(): void {
    this.last = 0;
  }
}

interface CaptureOptions {
  readonly disk: number;
  readonly lsns: LsnSequence;
  readonly journal: Journal;
  /** LSN through which the image is on stable storage at the start. Default `lsns.current`. */
  readonly syncedThroughLsn?: number;
  /** Granularity of the initial copy, and of the record of which ranges were written when. Default 1 MiB. */
  readonly copyChunkBytes?: number;
  /**
   * Waits before each retry of an image write that failed after its record was journaled; when
   * they are used up the disk fails (see {@link ImageFailure}). Default 20, 200 and 1000 ms.
   */
  readonly imageRetryDelaysMs?: readonly number[];
  /** Told once, when the disk fails (see {@link ImageFailure}). */
  readonly onImageFailure?: (failure: ImageFailure) => void;
  /** The VM's replication-group barrier: holds write replies during a round (docs/multi-vm.md). */
  readonly gate?: WriteGate;
  /**
   * The VM's replication mode (one for all its disks): past the journal's cap, writes are tracked in
   * its dirty bitmap instead of waiting for room. Without it (a data dir that never replicated, whose
   * journal lets itself go) writes wait for room at the cap.
   */
  readonly mode?: BitmapMode;
}

/**
 * The image can no longer be trusted to hold the journal's state from `lsn` on:
 * - `write`: an image write kept failing after its record was journaled. The journal (and so the
 *   replica) holds that write and the image does not;
 * - `sync`: an fdatasync of the image failed, so writes applied since the last good one may be gone
 *   from the disk although they read back from the page cache (see {@link ImageSync}).
 * Either way the disk refuses every later write-type request and flush (EIO) rather than let image and
 * journal drift further apart, and the checkpoint stays below `lsn`, so that restarting the agent,
 * once the image is writable again, replays the records from `lsn` onto it.
 */
export interface ImageFailure {
  readonly op: 'write' | 'sync';
  readonly lsn: number;
  readonly error: string;
}

const DEFAULT_IMAGE_RETRY_DELAYS_MS = [20, 200, 1000];

const DEFAULT_COPY_CHUNK_BYTES = 1024 * 1024;

/**
 * The agent's capture point (nbdkit-style filter over the image). Every write-type request gets the
 * next LSN and is appended to the journal in that order, synchronously, so journal order is LSN
 * order. The journal record is written before the image (write-ahead), so after a crash the journal
 * holds at least what the image holds and replaying its tail repairs the image. Overlapping writes
 * reach the image in LSN order, so image and journal agree on every winner.
 */
export class CaptureBackend implements BlockBackend {
  private readonly order = new WriteOrder();
  readonly chunkBytes: number;
  /** LSN of the last write that touched each chunk; lets the initial copy detect a racing write. */
  private readonly lastWrite: Float64Array;
  private imageFailure: ImageFailure | undefined;
  private readonly imageSync: ImageSync;
  private stalled = 0;
  /** Counts generations begun at run time: a copy that read its chunk in an earlier one starts that chunk over. */
  private epoch = 0;

  constructor(
    private readonly next: BlockBackend,
    private readonly o: CaptureOptions,
  ) {
    this.chunkBytes = o.copyChunkBytes ?? DEFAULT_COPY_CHUNK_BYTES;
    this.lastWrite = new Float64Array(Math.ceil(next.size / this.chunkBytes));
    this.imageSync = new ImageSync(
      next,
      o.syncedThroughLsn ?? o.lsns.current,
      () => Math.min(o.lsns.current, this.order.oldest() - 1),
      (lsn, err) => this.latch({ op: 'sync', lsn, error: err.message }),
    );
  }

  get size(): number {
    return this.next.size;
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.next.read(offset, length);
  }

  write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    return this.capture({ kind: RecordKind.WRITE, offset, length: data.length, data }, fua, () =>
      this.next.write(offset, data, false),
    );
  }

  zero(offset: number, length: number, fua: boolean, mayTrim: boolean): Promise<void> {
    return this.capture({ kind: RecordKind.ZERO, offset, length }, fua, () =>
      this.next.zero(offset, length, false, mayTrim),
    );
  }

  trim(offset: number, length: number, fua: boolean): Promise<void> {
    return this.capture({ kind: RecordKind.TRIM, offset, length }, fua, () => this.next.trim(offset, length, false));
  }

  async flush(): Promise<void> {
    await Promise.all([this.o.journal.sync(), this.syncImage()]);
  }

  /**
   * fdatasyncs the image alone (the checkpoint syncs the journal once for every disk). Once one has
   * failed, every later one fails too: see {@link ImageSync}.
   */
  syncImage(): Promise<void> {
    return this.imageSync.sync();
  }

  close(): Promise<void> {
    return this.next.close();
  }

  private async capture(
    r: Omit<ChangeRecord, 'lsn' | 'disk'>,
    fua: boolean,
    apply: () => Promise<void>,
  ): Promise<void> {
    this.refuseIfFailed();
    if (this.o.mode !== undefined) {
      const marked = this.o.mode.track(this.o.disk, r.offset, r.length);
      if (marked !== undefined) return this.captureUnjournaled(r.offset, r.length, marked, fua, apply);
    } else {
      const room = this.o.journal.room();
      if (room !== undefined) {
        this.stalled++;
        await room; // journal at its cap: stall this write, never drop it
        this.refuseIfFailed();
      }
    }
    const lsn = this.o.lsns.next();
    this.touch(r.offset, r.length, lsn);
    const logged = this.o.journal.append({ ...r, lsn, disk: this.o.disk, time: Date.now() });
    const { handle, ready } = this.order.enter(lsn, r.offset, r.length);
    try {
      await logged;
      if (ready !== undefined) await ready;
      await this.applyJournaled(lsn, apply);
    } finally {
      this.order.leave(handle);
    }
    if (fua) await this.flush();
    const held = this.o.gate?.wait(lsn);
    if (held !== undefined) await held;
  }

  /**
   * A write in bitmap mode: it takes no LSN (a generation's LSNs have no gaps) and reaches the image
   * only once its regions are durably marked (`marked`). It is ordered against other writes as if it
   * had the next LSN, so a journaled write overlapping it lands after it. A failed image write is
   * answered and not retried: nothing of it was journaled, and its regions are resynced from the image
   * whatever it holds.
   */
  private async captureUnjournaled(
    offset: number,
    length: number,
    marked: Promise<void>,
    fua: boolean,
    apply: () => Promise<void>,
  ): Promise<void> {
    const after = this.o.lsns.current + 1;
    const { handle, ready } = this.order.enter(after, offset, length);
    try {
      await marked;
      if (ready !== undefined) await ready;
      await apply();
    } finally {
      this.order.leave(handle);
    }
    if (fua) await this.flush();
    const held = this.o.gate?.wait(after);
    if (held !== undefined) await held;
  }

  /** VM writes that waited at the journal's cap since the start (only without a replication mode). */
  get stalledWrites(): number {
    return this.stalled;
  }

  /**
   * Brings a journaled write to the image, retrying what fails: once its record is in the journal
   * the write will reach the replica, so giving up silently would leave the source behind it.
   */
  private async applyJournaled(lsn: number, apply: () => Promise<void>): Promise<void> {
    const delays = this.o.imageRetryDelaysMs ?? DEFAULT_IMAGE_RETRY_DELAYS_MS;
    for (let attempt = 0; ; attempt++) {
      try {
        await apply();
        return;
      } catch (err) {
        const delay = delays[attempt];
        if (delay === undefined || this.imageFailure !== undefined) {
          this.latch({ op: 'write', lsn, error: (err as Error).message });
          throw err;
        }
        await sleep(delay);
      }
    }
  }

  /** Keeps the lowest failed LSN: the checkpoint and the replay after a restart go by it. */
  private latch(f: ImageFailure): void {
    const prev = this.imageFailure;
    if (prev === undefined || f.lsn < prev.lsn) this.imageFailure = f;
    if (prev === undefined) this.o.onImageFailure?.(f);
  }

  private refuseIfFailed(): void {
    const f = this.imageFailure;
    if (f === undefined) return;
    throw new BackendError(
      Errno.EIO,
      f.op === 'write'
        ? `the image lacks journaled LSN ${f.lsn} (${f.error}); writes are refused until the agent restarts and replays it`
        : `an fdatasync of the image failed (${f.error}); writes are refused until the agent restarts and replays the journal from LSN ${f.lsn}`,
    );
  }

  /** How the image failed for good, if it did; the disk takes no more writes. */
  failure(): ImageFailure | undefined {
    return this.imageFailure;
  }

  private touch(offset: number, length: number, lsn: number): void {
    const last = Math.floor((offset + Math.max(length, 1) - 1) / this.chunkBytes);
    for (let c = Math.floor(offset / this.chunkBytes); c <= last; c++) this.lastWrite[c] = lsn;
  }

  /**
   * Copies one chunk of the image into the stream whole (see {@link copyRangeBy}), an all-zero chunk
   * skipped. Resolves to whether data was sent.
   */
  async copyChunk(chunk: number): Promise<boolean> {
    const runs = await this.copyChunkBy(chunk, (data) =>
      isZero(data) ? [] : [{ start: 0, length: data.length, zero: false }],
    );
    return runs.length > 0;
  }

  /**
   * {@link copyChunk} with a choice of what goes into the stream: `plan` gets the chunk as read and
   * names the parts to journal, as WRITE records of their bytes or ZERO records (the copy by
   * difference sends only blocks whose sums differ from the replica's). Resolves to the parts journaled.
   */
  copyChunkBy(chunk: number, plan: (data: Buffer) => readonly CopyRun[]): Promise<readonly CopyRun[]> {
    const offset = chunk * this.chunkBytes;
    return this.copyRangeBy(offset, Math.min(this.chunkBytes, this.size - offset), plan).then((r) => r.runs);
  }

  /**
   * Copies a range into the stream whole (the resync of a dirty region): an all-zero range as ZERO when
   * `sendZeroes` (a replica that may hold data there), else skipped. Resolves to the copy's LSN,
   * `undefined` when skipped.
   */
  async copyRange(offset: number, length: number, sendZeroes: boolean): Promise<number | undefined> {
    const { runs, lsn } = await this.copyRangeBy(offset, length, (data) => {
      const zero = isZero(data);
      return zero && !sendZeroes ? [] : [{ start: 0, length: data.length, zero }];
    });
    return runs.length > 0 ? lsn : undefined;
  }

  /**
   * Copies parts of a range of the image into the stream, ordered against the VM's writes: it waits for
   * in-flight writes to the range, reads it, and if no write touched it meanwhile, journals the parts
   * `plan` names under consecutive LSNs in the same tick. A write that races the copy therefore always
   * lands after it, and a replica never gets older data over newer. Nothing is journaled in bitmap
   * mode: it waits for the mode to end. Resolves to the parts journaled and the last LSN they took.
   */
  private async copyRangeBy(
    offset: number,
    length: number,
    plan: (data: Buffer) => readonly CopyRun[],
  ): Promise<{ runs: readonly CopyRun[]; lsn: number }> {
    for (;;) {
      // A failed disk's image lacks a journaled write: a copy read from it now would put older data
      // after that write in the stream.
      this.refuseIfFailed();
      // Bitmap mode first: the journal stays at its cap until it ends, and the wait is for that.
      const unjournaled = this.o.mode?.whenJournaling();
      if (unjournaled !== undefined) {
        await unjournaled;
        continue;
      }
      const room = this.o.journal.room();
      if (room !== undefined) await room;
      const epoch = this.epoch;
      const seen = this.o.lsns.current;
      const busy = this.order.overlapping(offset, length);
      if (busy !== undefined) await busy;
      const data = await this.next.read(offset, length);
      // Writes with an LSN up to `seen` were waited for above; any later one raised lastWrite. A write
      // in bitmap mode marked the range dirty: it is copied again by the resync. Across a new generation
      // LSNs start again at 1, so neither comparison would mean anything: read again.
      if (this.writtenSince(offset, length, seen) || epoch !== this.epoch || this.o.mode?.state === 'bitmap') continue;
      const runs = plan(data);
      if (runs.length === 0) return { runs, lsn: 0 };
      this.refuseIfFailed();
      const time = Date.now();
      const appends = runs.map((r) => {
        const lsn = this.o.lsns.next();
        const at = { lsn, disk: this.o.disk, offset: offset + r.start, length: r.length, time };
        return this.o.journal.append(
          r.zero
            ? { ...at, kind: RecordKind.ZERO }
            : { ...at, kind: RecordKind.WRITE, data: data.subarray(r.start, r.start + r.length) },
        );
      });
      const lsn = this.o.lsns.current;
      this.touch(offset, length, lsn);
      await Promise.all(appends);
      return { runs, lsn };
    }
  }

  private writtenSince(offset: number, length: number, lsn: number): boolean {
    const last = Math.floor((offset + Math.max(length, 1) - 1) / this.chunkBytes);
    for (let c = Math.floor(offset / this.chunkBytes); c <= last; c++) if ((this.lastWrite[c] ?? 0) > lsn) return true;
    return false;
  }

  /**
   * The cut of a new generation begun at run time, made with the VM's writes paused and none in flight
   * (`drained`), once the LSN sequence restarted: forgets which LSN last wrote each chunk and where the
   * image is known synced, both in the old generation's numbers. A copy still reading a chunk reads it
   * again (see `copyRangeBy`). A disk that failed keeps its failure: the caller does not cut then.
   */
  startOver(): void {
    if (this.order.oldest() !== Infinity) throw new Error('a generation cut with writes in flight');
    this.epoch++;
    this.lastWrite.fill(0);
    this.imageSync.startOver();
  }

  /** Resolves once every write that has an LSN has reached the image (or failed). */
  drained(): Promise<void> {
    return this.order.idle();
  }

  /** LSN of the oldest write not yet applied to the image (or that failed to be); Infinity when none is. */
  oldestPending(): number {
    return Math.min(this.order.oldest(), this.imageFailure?.lsn ?? Infinity);
  }
}
