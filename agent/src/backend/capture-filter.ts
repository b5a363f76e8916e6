import { setTimeout as sleep } from 'node:timers/promises';
import { RecordKind, type ChangeRecord } from '@site-recovery/shared';
import { BackendError, Errno, type BlockBackend } from '@site-recovery/shared/nbd';
import type { Journal } from '../journal/journal.js';
import type { WriteGate } from '../group/write-gate.js';
import { ImageSync } from './image-sync.js';
import { WriteOrder } from './write-order.js';

const ZERO_CHUNK = Buffer.alloc(64 * 1024);

function isZero(b: Buffer): boolean {
  for (let at = 0; at < b.length; at += ZERO_CHUNK.length) {
    const n = Math.min(ZERO_CHUNK.length, b.length - at);
    if (b.compare(ZERO_CHUNK, 0, n, at, at + n) !== 0) return false;
  }
  return true;
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
    const room = this.o.journal.room();
    if (room !== undefined) await room; // journal at its cap: stall this write, never drop it
    this.refuseIfFailed();
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
   * Copies one chunk of the image into the stream for the initial replication, ordered against the
   * VM's writes: it waits for in-flight writes to the chunk, reads it, and if no write touched the
   * chunk meanwhile, journals it as a write under the next LSN in the same tick. A write that
   * races the copy therefore always lands after it, and a replica never gets older data over newer.
   * All-zero chunks are skipped (a new replica starts as zeroes). Resolves to whether data was sent.
   */
  async copyChunk(chunk: number): Promise<boolean> {
    const offset = chunk * this.chunkBytes;
    const length = Math.min(this.chunkBytes, this.size - offset);
    for (;;) {
      // A failed disk's image lacks a journaled write: a copy read from it now would put older data
      // after that write in the stream.
      this.refuseIfFailed();
      const room = this.o.journal.room();
      if (room !== undefined) await room;
      const epoch = this.epoch;
      const seen = this.o.lsns.current;
      const busy = this.order.overlapping(offset, length);
      if (busy !== undefined) await busy;
      const data = await this.next.read(offset, length);
      // Writes with an LSN up to `seen` were waited for above; any later one raised lastWrite. Across a
      // new generation LSNs start again at 1, so neither comparison would mean anything: read again.
      if ((this.lastWrite[chunk] ?? 0) > seen || epoch !== this.epoch) continue;
      if (isZero(data)) return false;
      this.refuseIfFailed();
      const lsn = this.o.lsns.next();
      this.lastWrite[chunk] = lsn;
      await this.o.journal.append({
        lsn,
        kind: RecordKind.WRITE,
        disk: this.o.disk,
        offset,
        length,
        data,
        time: Date.now(),
      });
      return true;
    }
  }

  /**
   * The cut of a new generation begun at run time, made with the VM's writes paused and none in flight
   * (`drained`), once the LSN sequence restarted: forgets which LSN last wrote each chunk and where the
   * image is known synced, both in the old generation's numbers. A copy still reading a chunk reads it
   * again (see `copyChunk`). A disk that failed keeps its failure: the caller does not cut then.
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
