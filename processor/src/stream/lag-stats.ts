/**
 * Replication lag of the most recent records: capture time at the source to apply time here. A
 * fixed ring of samples, so a busy VM costs one array store per record and percentiles describe
 * recent behaviour rather than all history.
 */
export class LagStats {
  private readonly ring: Float64Array;
  private next = 0;
  private count = 0;

  /** `window`: how many recent samples the percentiles cover. */
  constructor(window: number) {
    this.ring = new Float64Array(Math.max(1, window));
  }

  add(ms: number): void {
    this.ring[this.next] = ms;
    this.next = (this.next + 1) % this.ring.length;
    if (this.count < this.ring.length) this.count++;
  }

  clear(): void {
    this.next = 0;
    this.count = 0;
  }

  summary(): { p50: number | null; p99: number | null; samples: number } {
    if (this.count === 0) return { p50: null, p99: null, samples: 0 };
    const sorted = this.ring.slice(0, this.count).sort();
    const pick = (q: number): number =>
      Math.round(sorted[Math.min(this.count - 1, Math.floor(q * this.count))]! * 10) / 10;
    return { p50: pick(0.5), p99: pick(0.99), samples: this.count };
  }
}
