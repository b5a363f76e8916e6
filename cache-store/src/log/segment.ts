import { SEGMENT_HEADER_BYTES } from './segment-format.js';

/** Where one frame sits in its segment file. */
export interface FrameLocation {
  readonly first: number;
  readonly last: number;
  /** Offset of the frame header in the file. */
  readonly offset: number;
  /** Bytes of header plus frame. */
  readonly bytes: number;
}

/**
 * One segment file and the index of its frames, kept in memory after the open scan: three number
 * arrays rather than an object per frame, since a large backlog holds millions of frames.
 */
export class Segment {
  private readonly firsts: number[] = [];
  private readonly offsets: number[] = [];
  private lastLsnValue: number;

  constructor(
    readonly file: string,
    readonly firstLsn: number,
    /** Bytes of the file that hold whole frames (header included). */
    public bytes: number = SEGMENT_HEADER_BYTES,
  ) {
    this.lastLsnValue = firstLsn - 1;
  }

  /** LSN of the last record held; `firstLsn - 1` when empty. */
  get lastLsn(): number {
    return this.lastLsnValue;
  }

  get frames(): number {
    return this.firsts.length;
  }

  /** Indexes a frame written at the end of the file. */
  add(first: number, last: number, offset: number, bytes: number): void {
    this.firsts.push(first);
    this.offsets.push(offset);
    this.lastLsnValue = last;
    this.bytes = offset + bytes;
  }

  frame(i: number): FrameLocation {
    const first = this.firsts[i]!;
    const last = i + 1 < this.firsts.length ? this.firsts[i + 1]! - 1 : this.lastLsnValue;
    const offset = this.offsets[i]!;
    const end = i + 1 < this.offsets.length ? this.offsets[i + 1]! : this.bytes;
    return { first, last, offset, bytes: end - offset };
  }

  /** Index of the frame holding `lsn`, or of the first frame after it; `frames` when there is none. */
  find(lsn: number): number {
    let lo = 0;
    let hi = this.firsts.length; // answer in [lo, hi]
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.frame(mid).last < lsn) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Forgets frames that start after `lsn`; returns the byte length the file should be cut to. */
  truncateAfter(lsn: number): number {
    let n = this.firsts.length;
    while (n > 0 && this.firsts[n - 1]! > lsn) n--;
    if (n < this.firsts.length) {
      // Frames are contiguous, so the first one dropped starts right after the last one kept.
      this.lastLsnValue = this.firsts[n]! - 1;
      this.bytes = this.offsets[n]!;
      this.firsts.length = n;
      this.offsets.length = n;
    }
    return this.bytes;
  }
}
