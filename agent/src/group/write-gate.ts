/** What one hold did to the VM: how many write replies waited, and for how long. */
export interface HoldResult {
  /** From the start of the hold to its release. */
  readonly durationMs: number;
  /** Write-type requests whose reply waited. */
  readonly writesHeld: number;
  /** The longest any one reply waited (0 when none did). */
  readonly maxWriteHoldMs: number;
  /** Every reply's wait, in ms, for percentiles across holds. */
  readonly writeHoldsMs: readonly number[];
}

/**
 * Holds the completion (the NBD reply) of writes captured after a group barrier's mark, until the
 * round ends (docs/multi-vm.md). Writes still reach the journal and the image while held: only the
 * guest's view of their completion waits, which is what keeps a cause out of the cut when its effect
 * is in. One gate per VM, shared by all of its disks (one LSN sequence).
 */
export class WriteGate {
  /** Replies of writes with an LSN above this wait; Infinity when nothing is held. */
  private above = Infinity;
  private since = 0;
  private released: Promise<void> | undefined;
  private releaseNow: (() => void) | undefined;
  private waits: number[] = [];

  /** Whether a hold is in force. */
  get holding(): boolean {
    return this.above !== Infinity;
  }

  /** Replies waiting now: writes done and held only by the gate. */
  get waiting(): number {
    return this.waits.length;
  }

  /** Starts holding the replies of writes whose LSN is above `lsn` (the mark's LSN). */
  hold(lsn: number): void {
    if (this.holding) throw new Error('a write hold is already in force');
    this.above = lsn;
    this.since = performance.now();
    this.waits = [];
    this.released = new Promise((resolve) => (this.releaseNow = resolve));
  }

  /** Ends the hold: every held reply goes out now. */
  release(): HoldResult {
    if (!this.holding) return { durationMs: 0, writesHeld: 0, maxWriteHoldMs: 0, writeHoldsMs: [] };
    const now = performance.now();
    const holds = this.waits.map((t) => now - t);
    this.above = Infinity;
    this.releaseNow?.();
    this.released = undefined;
    this.releaseNow = undefined;
    this.waits = [];
    return {
      durationMs: now - this.since,
      writesHeld: holds.length,
      maxWriteHoldMs: holds.reduce((m, x) => Math.max(m, x), 0),
      writeHoldsMs: holds,
    };
  }

  /**
   * Called by the capture path when a write is done and about to be answered: a promise to await
   * before answering, or undefined (the common case, one comparison) when it may answer at once.
   */
  wait(lsn: number): Promise<void> | undefined {
    if (lsn <= this.above) return undefined;
    this.waits.push(performance.now());
    return this.released;
  }
}
