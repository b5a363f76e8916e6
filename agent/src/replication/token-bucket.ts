/** Whether sending waits on the bucket now, and for how long it has in all. */
export interface TokenBucketStatus {
  readonly held: boolean;
  /** Milliseconds spent waiting for tokens since the start, the current wait included. */
  readonly heldMs: number;
}

/**
 * A token bucket over bytes, the shipper's bandwidth limit (--max-bandwidth). Tokens accrue at
 * `bytesPerSecond` up to `burstBytes`, and the bucket starts full. A send of n bytes waits until
 * min(n, burst) tokens are there, then takes all n: one larger than the burst goes once the bucket is
 * full and leaves it in debt, which the sends after it wait out. So over any time t from the start, what
 * passes is at most `bytesPerSecond × t + max(burstBytes, largest send)`, and over a long run the rate
 * itself. One caller waits at a time (the shipper's pump).
 */
export class TokenBucket {
  private tokens: number;
  private last: number;
  private wake: ((go: boolean) => void) | undefined;
  private heldSince: number | undefined;
  private heldMs = 0;

  constructor(
    readonly bytesPerSecond: number,
    readonly burstBytes: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    if (!(bytesPerSecond > 0) || !(burstBytes > 0))
      throw new RangeError(`a token bucket needs a positive rate and burst (got ${bytesPerSecond}, ${burstBytes})`);
    this.tokens = burstBytes;
    this.last = now();
  }

  /**
   * Waits until `bytes` may go, and takes them. Resolves false, having taken nothing, when
   * {@link interrupt} ends the wait first (the connection closed).
   */
  async take(bytes: number): Promise<boolean> {
    if (this.wake !== undefined) throw new Error('TokenBucket.take called while another take waits');
    const need = Math.min(bytes, this.burstBytes);
    for (;;) {
      this.refill();
      if (this.tokens >= need) break;
      // Timers may fire a little early against this clock: the loop looks again and waits the rest.
      const ms = Math.max(1, Math.ceil(((need - this.tokens) / this.bytesPerSecond) * 1000));
      this.heldSince ??= this.now();
      let timer: NodeJS.Timeout | undefined;
      const go = await new Promise<boolean>((resolve) => {
        this.wake = resolve;
        timer = setTimeout(() => resolve(true), ms);
      });
      clearTimeout(timer);
      this.wake = undefined;
      if (!go) {
        this.endHold();
        return false;
      }
    }
    this.endHold();
    this.tokens -= bytes;
    return true;
  }

  /** Ends a waiting {@link take} at once with false. */
  interrupt(): void {
    this.wake?.(false);
  }

  status(): TokenBucketStatus {
    const waiting = this.heldSince !== undefined ? this.now() - this.heldSince : 0;
    return { held: this.heldSince !== undefined, heldMs: Math.round(this.heldMs + waiting) };
  }

  private refill(): void {
    const t = this.now();
    this.tokens = Math.min(this.burstBytes, this.tokens + ((t - this.last) / 1000) * this.bytesPerSecond);
    this.last = t;
  }

  private endHold(): void {
    if (this.heldSince === undefined) return;
    this.heldMs += this.now() - this.heldSince;
    this.heldSince = undefined;
  }
}
