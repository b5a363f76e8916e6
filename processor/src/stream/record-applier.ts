import { ErrorCode, SrError, type ChangeRecord } from '@site-recovery/shared';

/** What the applier writes into: `Replica.apply` (synchronous when it returns `undefined`). */
export interface ApplyTarget {
  apply(record: ChangeRecord): Promise<void> | undefined;
}

export interface RecordApplierOptions {
  /**
   * Most records waiting for or in an asynchronous apply (large writes, zeroing, anything queued
   * behind an overlapping one). Submitting waits beyond it; it also bounds the overlap scan each
   * record costs. Default 64.
   */
  readonly maxInFlightRecords?: number;
  /** Most payload bytes held by records in flight (their buffers stay alive until written). Default 64 MiB. */
  readonly maxInFlightBytes?: number;
  /** Called once per record when its change is visible in the replica. */
  readonly onApplied?: (record: ChangeRecord) => void;
}

const DEFAULT_MAX_IN_FLIGHT_RECORDS = 64;
const DEFAULT_MAX_IN_FLIGHT_BYTES = 64 * 1024 * 1024;

interface InFlight {
  readonly lsn: number;
  readonly disk: number;
  readonly start: number;
  readonly end: number;
  readonly bytes: number;
  done: boolean;
  waiters: (() => void)[] | undefined;
}

/**
 * Applies consecutive records to a replica: records whose ranges overlap land in LSN order, others
 * may overlap in time. Small writes complete synchronously and never enter the in-flight list, so a
 * stream of them costs no promise at all. `applied` is the highest LSN such that every record up to
 * it has landed: the position a flush can make durable.
 */
export class RecordApplier {
  private submittedLsn: number;
  /** Records not yet landed, in LSN order (a failed one stays, holding `applied` below it). */
  private readonly inFlight: InFlight[] = [];
  private inFlightBytes = 0;
  private running = 0;
  private failure: Error | undefined;
  private failedLsn = Infinity;
  private waiters: (() => void)[] = [];
  private readonly maxRecords: number;
  private readonly maxBytes: number;

  constructor(
    private readonly target: ApplyTarget,
    startLsn: number,
    private readonly o: RecordApplierOptions = {},
  ) {
    this.submittedLsn = startLsn;
    this.maxRecords = Math.max(1, o.maxInFlightRecords ?? DEFAULT_MAX_IN_FLIGHT_RECORDS);
    this.maxBytes = Math.max(1, o.maxInFlightBytes ?? DEFAULT_MAX_IN_FLIGHT_BYTES);
  }

  /** Highest LSN handed to the replica. */
  get submitted(): number {
    return this.submittedLsn;
  }

  /** Highest LSN through which every record has landed in the replica. */
  get applied(): number {
    const head = this.inFlight[0];
    return Math.min(head !== undefined ? head.lsn - 1 : this.submittedLsn, this.failedLsn - 1);
  }

  /** The first apply failure; once set, nothing more is accepted until `rewind`. */
  get failed(): Error | undefined {
    return this.failure;
  }

  /**
   * Starts applying `records`, which must continue from `submitted`. Resolves once each has been
   * started (not landed); waits only when the in-flight limits are reached.
   */
  async submit(records: readonly ChangeRecord[]): Promise<void> {
    for (const r of records) {
      this.throwIfFailed();
      if (r.lsn !== this.submittedLsn + 1)
        throw new SrError(ErrorCode.SEQUENCE, `record ${r.lsn} submitted after ${this.submittedLsn}`);
      while (
        this.inFlight.length >= this.maxRecords ||
        (this.inFlightBytes >= this.maxBytes && this.inFlight.length > 0)
      ) {
        await this.changed();
        this.throwIfFailed();
      }
      this.start(r);
    }
  }

  /** Resolves when nothing is in flight (failed records included: they are settled). */
  async drain(): Promise<void> {
    while (this.running > 0) await this.changed();
  }

  /**
   * After `drain`: forgets everything past `lsn` (and any failure), so the stream can be sent again
   * from `lsn + 1`. Records after `lsn` that did land are simply applied again, in order.
   */
  rewind(lsn: number): void {
    if (this.running > 0) throw new Error('rewind while records are in flight');
    this.inFlight.length = 0;
    this.inFlightBytes = 0;
    this.failure = undefined;
    this.failedLsn = Infinity;
    this.submittedLsn = lsn;
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  private start(r: ChangeRecord): void {
    const start = r.offset;
    const end = r.offset + r.length;
    let before: InFlight[] | undefined;
    for (const p of this.inFlight) {
      if (!p.done && p.disk === r.disk && p.start < end && start < p.end) (before ??= []).push(p);
    }
    this.submittedLsn = r.lsn;
    if (before === undefined) {
      let pending: Promise<void> | undefined;
      try {
        pending = this.target.apply(r);
      } catch (err) {
        this.fail(r.lsn, err);
        throw err;
      }
      if (pending === undefined) {
        this.o.onApplied?.(r);
        return;
      }
      this.track(r, pending);
      return;
    }
    const deps = before.map((p) => new Promise<void>((resolve) => (p.waiters ??= []).push(resolve)));
    this.track(
      r,
      Promise.all(deps).then(() => {
        // Whatever came before failed: applying this on top would not be the state after any prefix.
        if (this.failure !== undefined) throw this.failure;
        return this.target.apply(r);
      }),
    );
  }

  private track(r: ChangeRecord, pending: Promise<void>): void {
    const entry: InFlight = {
      lsn: r.lsn,
      disk: r.disk,
      start: r.offset,
      end: r.offset + r.length,
      bytes: r.length,
      done: false,
      waiters: undefined,
    };
    this.inFlight.push(entry);
    this.inFlightBytes += entry.bytes;
    this.running++;
    pending.then(
      () => {
        const i = this.inFlight.indexOf(entry);
        if (i >= 0) this.inFlight.splice(i, 1);
        this.inFlightBytes -= entry.bytes;
        this.o.onApplied?.(r);
        this.settle(entry);
      },
      (err: unknown) => {
        this.fail(entry.lsn, err);
        this.settle(entry);
      },
    );
  }

  private settle(entry: InFlight): void {
    entry.done = true;
    this.running--;
    if (entry.waiters !== undefined) for (const w of entry.waiters) w();
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w();
  }

  private fail(lsn: number, err: unknown): void {
    this.failure ??= err instanceof Error ? err : new Error(String(err));
    this.failedLsn = Math.min(this.failedLsn, lsn);
  }

  private changed(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}
