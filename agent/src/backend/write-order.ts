/**
 * Keeps overlapping writes to one disk in LSN order. A write registers its range when it gets its
 * LSN; before touching the image it waits for every earlier write whose range overlaps. Writes that
 * do not overlap proceed in parallel.
 */
interface InFlight {
  readonly lsn: number;
  readonly start: number;
  readonly end: number;
  waiters: (() => void)[] | undefined;
}

export class WriteOrder {
  private readonly inFlight: InFlight[] = [];

  /** Registers a range; returns a handle and a promise that resolves when earlier overlapping writes are done. */
  enter(lsn: number, start: number, length: number): { handle: InFlight; ready: Promise<void> | undefined } {
    const end = start + length;
    let before: InFlight[] | undefined;
    for (const w of this.inFlight) {
      if (w.start < end && start < w.end) (before ??= []).push(w);
    }
    const handle: InFlight = { lsn, start, end, waiters: undefined };
    this.inFlight.push(handle);
    if (before === undefined) return { handle, ready: undefined };
    const ready = Promise.all(before.map((w) => new Promise<void>((resolve) => (w.waiters ??= []).push(resolve)))).then(
      () => undefined,
    );
    return { handle, ready };
  }

  /** Resolves when every write now in flight that overlaps the range is done; `undefined` if none. */
  overlapping(start: number, length: number): Promise<void> | undefined {
    const end = start + length;
    const waits: Promise<void>[] = [];
    for (const w of this.inFlight) {
      if (w.start < end && start < w.end) waits.push(new Promise<void>((resolve) => (w.waiters ??= []).push(resolve)));
    }
    return waits.length === 0 ? undefined : Promise.all(waits).then(() => undefined);
  }

  leave(handle: InFlight): void {
    const i = this.inFlight.indexOf(handle);
    if (i >= 0) this.inFlight.splice(i, 1);
    if (handle.waiters !== undefined) for (const w of handle.waiters) w();
    if (this.inFlight.length === 0 && this.idleWaiters.length > 0) {
      const idle = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of idle) w();
    }
  }

  private idleWaiters: (() => void)[] = [];

  /** Resolves once no write is registered. */
  idle(): Promise<void> {
    if (this.inFlight.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Lowest LSN still registered (entries are added in LSN order); Infinity when empty. */
  oldest(): number {
    return this.inFlight[0]?.lsn ?? Infinity;
  }
}
