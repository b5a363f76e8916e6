import type { BackendFilter, BlockBackend } from '@site-recovery/shared/nbd';

/**
 * Holds the VM's write-type requests and flushes for the few milliseconds a new generation takes to
 * cut (generation-switch.ts): a request that arrives while paused waits before it reaches the capture
 * point, so it takes no LSN of the old generation; reads go on. One for all of a VM's disks, as they
 * share one LSN sequence. `settled` tells when every request that got past it has completed.
 */
export class WritePause {
  private inFlight = 0;
  private resumed: Promise<void> | undefined;
  private release: (() => void) | undefined;
  private idle: (() => void)[] = [];
  /** Requests held since the last pause, for the log. */
  held = 0;

  /** The filter to put in front of each disk's capture backend. */
  readonly filter: BackendFilter = (next) => this.wrap(next);

  get paused(): boolean {
    return this.resumed !== undefined;
  }

  pause(): void {
    if (this.resumed !== undefined) return;
    this.held = 0;
    this.resumed = new Promise((resolve) => (this.release = resolve));
  }

  resume(): void {
    const release = this.release;
    this.resumed = this.release = undefined;
    release?.();
  }

  /** Resolves once no request that got past the pause is still running. */
  settled(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  private wrap(next: BlockBackend): BlockBackend {
    return {
      get size() {
        return next.size;
      },
      read: (offset, length) => next.read(offset, length),
      write: (offset, data, fua) => this.run(() => next.write(offset, data, fua)),
      zero: (offset, length, fua, mayTrim) => this.run(() => next.zero(offset, length, fua, mayTrim)),
      trim: (offset, length, fua) => this.run(() => next.trim(offset, length, fua)),
      flush: () => this.run(() => next.flush()),
      close: () => next.close(),
    };
  }

  private run(op: () => Promise<void>): Promise<void> {
    if (this.resumed !== undefined) {
      this.held++;
      return this.resumed.then(() => this.run(op));
    }
    this.inFlight++;
    let done: Promise<void>;
    try {
      done = op();
    } catch (err) {
      this.left();
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    // Counted on a branch of its own: the caller awaits the backend's promise itself, one step sooner.
    done.then(this.leftAfter, this.leftAfter);
    return done;
  }

  private readonly leftAfter = (): void => this.left();

  private left(): void {
    if (--this.inFlight > 0 || this.idle.length === 0) return;
    const idle = this.idle;
    this.idle = [];
    for (const w of idle) w();
  }
}
