import { ErrorCode, SrError } from '@site-recovery/shared';

/**
 * The writers waiting for room under the journal's size cap. Past the cap the VM's writes wait here
 * until segments are released: they are stalled, never dropped. Stopping the agent ends the waits
 * with SR_SHUTTING_DOWN, so a stalled write is answered (and was never journaled).
 */
export class JournalRoom {
  private waiters: { resolve: () => void; reject: (err: Error) => void }[] = [];
  private stopped = false;

  /** Undefined when `full` is false (go ahead now); else resolves once {@link wake} finds room. */
  wait(full: boolean): Promise<void> | undefined {
    if (!full) return undefined;
    if (this.stopped) return Promise.reject(stoppedWaiting());
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** Lets every waiter go when there is room again. */
  wake(full: boolean): void {
    if (full || this.waiters.length === 0) return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.resolve();
  }

  /** Ends every wait, now and later, with SR_SHUTTING_DOWN. */
  stop(): void {
    this.stopped = true;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.reject(stoppedWaiting());
  }

  /** Whether writers are waiting (the status's `stalled`). */
  get waiting(): boolean {
    return this.waiters.length > 0;
  }
}

function stoppedWaiting(): SrError {
  return new SrError(
    ErrorCode.SHUTTING_DOWN,
    'the agent is stopping; a write stalled at the journal cap was not taken',
  );
}
