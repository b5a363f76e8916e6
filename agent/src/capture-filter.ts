import { RecordKind, type ChangeRecord } from '@site-recovery/shared';
import type { BackendFilter, BlockBackend } from './block-backend.js';
import type { Journal } from './journal.js';
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
}

export interface CaptureOptions {
  readonly disk: number;
  readonly lsns: LsnSequence;
  readonly journal: Journal;
  /** Granularity of the initial copy, and of the record of which ranges were written when. Default 1 MiB. */
  readonly copyChunkBytes?: number;
}

export const DEFAULT_COPY_CHUNK_BYTES = 1024 * 1024;

/**
 * The agent's capture point (nbdkit-style filter). Every write-type request gets the next LSN and is
 * appended to the journal in that order, synchronously, so journal order is LSN order. The journal
 * record is written before the image (write-ahead), so after a crash the journal holds at least
 * what the image holds and replaying its tail repairs the image. Overlapping writes reach the image
 * in LSN order, so image and journal agree on every winner.
 */
export function captureFilter(options: CaptureOptions): BackendFilter {
  return (next) => new CaptureBackend(next, options);
}

export class CaptureBackend implements BlockBackend {
  private readonly order = new WriteOrder();
  readonly chunkBytes: number;
  /** LSN of the last write that touched each chunk; lets the initial copy detect a racing write. */
  private readonly lastWrite: Float64Array;

  constructor(
    private readonly next: BlockBackend,
    private readonly o: CaptureOptions,
  ) {
    this.chunkBytes = o.copyChunkBytes ?? DEFAULT_COPY_CHUNK_BYTES;
    this.lastWrite = new Float64Array(Math.ceil(next.size / this.chunkBytes));
  }

  get size(): number {
    return this.next.size;
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.next.read(offset, length);
  }

  write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    return this.capture({ kind: RecordKind.WRITE, offset, length: data.length, data }, fua, () => this.next.write(offset, data, false));
  }

  zero(offset: number, length: number, fua: boolean, mayTrim: boolean): Promise<void> {
    return this.capture({ kind: RecordKind.ZERO, offset, length }, fua, () => this.next.zero(offset, length, false, mayTrim));
  }

  trim(offset: number, length: number, fua: boolean): Promise<void> {
    return this.capture({ kind: RecordKind.TRIM, offset, length }, fua, () => this.next.trim(offset, length, false));
  }

  async flush(): Promise<void> {
    await Promise.all([this.o.journal.sync(), this.next.flush()]);
  }

  close(): Promise<void> {
    return this.next.close();
  }

  private async capture(
    r: Omit<ChangeRecord, 'lsn' | 'disk'>,
    fua: boolean,
    apply: () => Promise<void>,
  ): Promise<void> {
    const room = this.o.journal.room();
    if (room !== undefined) await room; // journal at its cap: stall this write, never drop it
    const lsn = this.o.lsns.next();
    this.touch(r.offset, r.length, lsn);
    const logged = this.o.journal.append({ ...r, lsn, disk: this.o.disk, time: Date.now() });
    const { handle, ready } = this.order.enter(lsn, r.offset, r.length);
    try {
      await logged;
      if (ready !== undefined) await ready;
      await apply();
    } finally {
      this.order.leave(handle);
    }
    if (fua) await this.flush();
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
      const room = this.o.journal.room();
      if (room !== undefined) await room;
      const seen = this.o.lsns.current;
      const busy = this.order.overlapping(offset, length);
      if (busy !== undefined) await busy;
      const data = await this.next.read(offset, length);
      // Writes with an LSN up to `seen` were waited for above; any later one raised lastWrite.
      if ((this.lastWrite[chunk] ?? 0) > seen) continue;
      if (isZero(data)) return false;
      const lsn = this.o.lsns.next();
      this.lastWrite[chunk] = lsn;
      await this.o.journal.append({ lsn, kind: RecordKind.WRITE, disk: this.o.disk, offset, length, data, time: Date.now() });
      return true;
    }
  }

  /** Resolves once every write that has an LSN has reached the image (or failed). */
  drained(): Promise<void> {
    return this.order.idle();
  }

  /** LSN of the oldest write not yet applied to the image; Infinity when none is. */
  oldestPending(): number {
    return this.order.oldest();
  }
}
