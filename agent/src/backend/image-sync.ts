import { BackendError, Errno, type BlockBackend } from '@site-recovery/shared/nbd';

interface Waiter {
  readonly ticket: number;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

/**
 * The fdatasyncs of one disk image, one at a time, and the memory of one that failed.
 *
 * Why one at a time: Linux reports a writeback error to one fdatasync per descriptor, so of two
 * overlapping calls one can succeed although pages written before both were lost. Callers that
 * arrive while a sync runs share the next one (their writes may have missed the running one).
 *
 * Why a failure is never forgotten (PostgreSQL's "fsyncgate"): after a failed fdatasync the kernel may
 * have dropped the dirty pages and marked them clean, so a later fdatasync can succeed without them.
 * From the first failure on every sync fails with that error, and {@link failedFromLsn} names the
 * first LSN the image can no longer be trusted to hold on disk: the checkpoint must stay below it,
 * so that a restart redoes those records from the journal.
 */
export class ImageSync {
  private requested = 0;
  private done = 0;
  private waiters: Waiter[] = [];
  private running = false;
  private syncedThrough: number;
  private failure: { readonly lsn: number; readonly error: BackendError } | undefined;

  /**
   * @param syncedThrough LSN through which the image is on stable storage when this starts.
   * @param appliedThrough LSN through which every write to this image has been applied, asked just
   *   before each fdatasync: what a successful one makes durable.
   * @param onFailure told once, at the first failure.
   */
  constructor(
    private readonly image: BlockBackend,
    syncedThrough: number,
    private readonly appliedThrough: () => number,
    private readonly onFailure: (lsn: number, error: Error) => void,
  ) {
    this.syncedThrough = syncedThrough;
  }

  /** Resolves once every write applied before the call is on stable storage; rejects forever after a failure. */
  sync(): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure.error);
    const ticket = ++this.requested;
    const p = new Promise<void>((resolve, reject) => this.waiters.push({ ticket, resolve, reject }));
    if (!this.running) void this.drive();
    return p;
  }

  /**
   * A new generation restarted the LSNs at 1 (CaptureBackend.startOver): the image is known synced
   * through none of them yet. A sync that started before settles its callers but moves nothing.
   */
  startOver(): void {
    this.epoch++;
    this.syncedThrough = 0;
  }

  private epoch = 0;

  /** The first LSN the image may have lost, once a sync has failed. */
  get failedFromLsn(): number | undefined {
    return this.failure?.lsn;
  }

  private async drive(): Promise<void> {
    this.running = true;
    while (this.done < this.requested) {
      const upto = this.requested;
      try {
        if (this.failure !== undefined) throw this.failure.error;
        const through = this.appliedThrough();
        const before = this.syncedThrough;
        const epoch = this.epoch;
        try {
          await this.image.flush();
        } catch (err) {
          // Begun before a new generation's cut: nothing of the new one is known synced.
          const lsn = epoch === this.epoch ? before + 1 : 1;
          const error = new BackendError(
            Errno.EIO,
            `an fdatasync of the image failed (${(err as Error).message}); the kernel may have dropped written pages, ` +
              `so the disk refuses writes and flushes until the agent restarts and replays the journal from LSN ${lsn}`,
            { cause: err },
          );
          this.failure = { lsn, error };
          this.onFailure(lsn, err instanceof Error ? err : new Error(String(err)));
          throw error;
        }
        if (epoch === this.epoch) this.syncedThrough = Math.max(this.syncedThrough, through);
        this.settle(upto, (w) => w.resolve());
      } catch (err) {
        this.settle(upto, (w) => w.reject(err));
      }
      this.done = upto;
    }
    this.running = false;
  }

  private settle(upto: number, how: (w: Waiter) => void): void {
    const now = this.waiters.filter((w) => w.ticket <= upto);
    this.waiters = this.waiters.filter((w) => w.ticket > upto);
    for (const w of now) how(w);
  }
}
