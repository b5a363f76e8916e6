import { Backoff, ErrorCode, type BackoffOptions, type Logger, type SrError } from '@site-recovery/shared';
import { errorInfo } from './storage-error.js';
import type { ErrorInfo } from './vm-status.js';

/**
 * Delays between attempts to apply again after the replica's storage failed (a full disk, an I/O
 * error): the first after 1 s, doubling up to 30 s, with jitter.
 */
export const DEFAULT_STORAGE_RETRY: Required<BackoffOptions> = {
  initialDelayMs: 1000,
  maxDelayMs: 30_000,
  jitter: 0.5,
};

/** What status shows of a paused VM. */
export interface PauseInfo extends ErrorInfo {
  /** When the next attempt starts (ISO 8601); absent while one is under way. */
  readonly retryAt?: string;
}

/**
 * One VM's applying, paused because its replica or undo logs could not be written or made durable
 * (SR_NO_SPACE for a full disk or quota, SR_IO otherwise). Nothing is confirmed past the durable
 * position, so the cache-store keeps every record; every point stays. Batches still arriving are
 * ignored until the VM's stream begins again: after a delay (exponential backoff) `retry` subscribes
 * the VM again from its durable position, and the pause ends once a batch lands.
 */
export class ApplyPause {
  private error: ErrorInfo | undefined;
  private retryAt: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private ignoring = false;
  private readonly backoff: Backoff;

  constructor(
    private readonly vm: string,
    private readonly log: Logger,
    o: BackoffOptions | undefined,
    private readonly retry: () => void,
  ) {
    this.backoff = new Backoff({ ...DEFAULT_STORAGE_RETRY, ...o });
  }

  /** Whether batches are being ignored (from a pause until the stream begins again). */
  get ignoringBatches(): boolean {
    return this.ignoring;
  }

  get info(): PauseInfo | undefined {
    const e = this.error;
    if (e === undefined) return undefined;
    return this.retryAt !== undefined ? { ...e, retryAt: new Date(this.retryAt).toISOString() } : e;
  }

  /** Whether the pause is for a full disk (or quota): what health names on its own. */
  get diskFull(): boolean {
    return this.error?.code === ErrorCode.NO_SPACE;
  }

  /** Pauses (again) for `err`; the next attempt is scheduled unless one already is. */
  pause(err: SrError): void {
    const first = this.error === undefined;
    this.error = errorInfo(err);
    this.ignoring = true;
    if (this.timer !== undefined) return;
    const delay = this.backoff.next();
    this.retryAt = Date.now() + delay;
    if (first)
      this.log.error(
        { vm: this.vm, code: err.code, err: err.message, retryInMs: delay },
        err.code === ErrorCode.NO_SPACE
          ? 'the replica cannot grow (disk full): applying paused, every point kept; retrying'
          : 'replica storage failed: applying paused; retrying',
      );
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.retryAt = undefined;
      this.retry();
    }, delay);
    this.timer.unref();
  }

  /** The VM's stream began (again): batches apply from here; a pending attempt is not needed any more. */
  streamBegan(): void {
    this.ignoring = false;
    this.cancel();
  }

  /** A batch landed: the storage works again. */
  progressed(): void {
    if (this.error === undefined) return;
    this.error = undefined;
    this.backoff.reset();
  }

  close(): void {
    this.cancel();
  }

  private cancel(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.retryAt = undefined;
  }
}
