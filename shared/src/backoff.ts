/** How reconnects are spaced. */
export interface BackoffOptions {
  /** Delay before the first retry. Default 250 ms. */
  readonly initialDelayMs?: number;
  /** Longest delay between retries. Default 10 s. */
  readonly maxDelayMs?: number;
  /**
   * Fraction of each delay that is random (0: none, 1: anywhere from 0 to the delay), so that many
   * processors do not reconnect to a restarted cache-store in lockstep. Default 0.5.
   */
  readonly jitter?: number;
}

export const DEFAULT_BACKOFF = { initialDelayMs: 250, maxDelayMs: 10_000, jitter: 0.5 } as const;

/** Exponential backoff with jitter: each failure doubles the delay up to the maximum. */
export class Backoff {
  private failures = 0;
  private readonly initial: number;
  private readonly max: number;
  private readonly jitter: number;

  constructor(
    o: BackoffOptions = {},
    private readonly random: () => number = Math.random,
  ) {
    this.initial = o.initialDelayMs ?? DEFAULT_BACKOFF.initialDelayMs;
    this.max = Math.max(this.initial, o.maxDelayMs ?? DEFAULT_BACKOFF.maxDelayMs);
    this.jitter = Math.min(1, Math.max(0, o.jitter ?? DEFAULT_BACKOFF.jitter));
  }

  /** The delay before the next attempt; counts one more failure. */
  next(): number {
    const base = Math.min(this.max, this.initial * 2 ** Math.min(this.failures, 30));
    this.failures++;
    return Math.round(base * (1 - this.jitter * this.random()));
  }

  reset(): void {
    this.failures = 0;
  }

  get attempts(): number {
    return this.failures;
  }
}
