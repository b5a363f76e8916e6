import { RecordKind, type ChangeRecord } from '@site-recovery/shared';
import type { BackendFilter, BlockBackend } from './block-backend.js';
import type { Journal } from './journal.js';
import { WriteOrder } from './write-order.js';

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
}

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

  constructor(
    private readonly next: BlockBackend,
    private readonly o: CaptureOptions,
  ) {}

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
    const lsn = this.o.lsns.next();
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

  /** LSN of the oldest write not yet applied to the image; Infinity when none is. */
  oldestPending(): number {
    return this.order.oldest();
  }
}
