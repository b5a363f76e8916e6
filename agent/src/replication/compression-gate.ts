/** When to stop trying lz4 on a stream that does not compress, and how often to look again. */
interface CompressionGateOptions {
  /** Consecutive batches that did not shrink before attempts pause. Default 4. */
  readonly misses?: number;
  /** Batches sent uncompressed, without an attempt, before the next probe. Default 32. */
  readonly skip?: number;
}

/**
 * Decides whether the next batch is worth an lz4 attempt. A disk of encrypted or already-compressed
 * data makes every attempt a loss (the compressor's time, and an output buffer that is thrown
 * away), so after `misses` failures in a row batches go out as they are; every `skip` batches one is
 * tried again, and a success resumes compressing everything. Same idea as an early abort in ZFS.
 */
export class CompressionGate {
  private readonly misses: number;
  private readonly skip: number;
  private failures = 0;
  private skipLeft = 0;
  private skipping = false;

  constructor(options: CompressionGateOptions = {}) {
    this.misses = options.misses ?? 4;
    this.skip = options.skip ?? 32;
  }

  shouldTry(): boolean {
    if (this.skipLeft === 0) return true;
    this.skipLeft--;
    return false;
  }

  /** The outcome of an attempt `shouldTry` allowed. */
  record(compressed: boolean): void {
    if (compressed) {
      this.failures = 0;
      this.skipping = false;
      return;
    }
    this.failures++;
    // Once skipping, one failed probe is enough to keep skipping.
    if (this.skipping || this.failures >= this.misses) {
      this.skipping = true;
      this.failures = 0;
      this.skipLeft = this.skip;
    }
  }

  /** Whether attempts are paused because the data did not compress (for status). */
  get paused(): boolean {
    return this.skipping;
  }
}
