import fsp from 'node:fs/promises';
import { fsyncDir } from '@site-recovery/shared';
import type { Segment } from './segment.js';
import { storageError } from './storage-errors.js';

/**
 * The retained segments of one VM's log, oldest first. Never empty: the newest segment is the one
 * being appended to, and it stays even when every record in it is released, so the log always has a
 * file to go on in.
 */
export class SegmentList {
  constructor(
    private readonly dir: string,
    /** At least one (loadSegments always yields the segment to append to). */
    private readonly segments: Segment[],
  ) {}

  get oldest(): Segment {
    return this.segments[0]!;
  }

  get newest(): Segment {
    return this.segments[this.segments.length - 1]!;
  }

  get count(): number {
    return this.segments.length;
  }

  /** Bytes of every retained segment file, headers included. */
  get bytes(): number {
    return this.segments.reduce((n, s) => n + s.bytes, 0);
  }

  /** A segment begun after the newest. */
  push(segment: Segment): void {
    this.segments.push(segment);
  }

  /** The segment whose range holds `lsn` (the newest for any LSN past its start). */
  holding(lsn: number): Segment | undefined {
    let lo = 0;
    let hi = this.segments.length - 1;
    if (lsn < this.segments[0]!.firstLsn) return undefined;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.segments[mid]!.firstLsn <= lsn) lo = mid;
      else hi = mid - 1;
    }
    return this.segments[lo];
  }

  /** Deletes the oldest segments whose every record is <= `through`, never the newest. */
  async drop(through: number, vm: string): Promise<void> {
    const drop: Segment[] = [];
    while (this.segments.length > 1 && this.segments[0]!.lastLsn <= through) drop.push(this.segments.shift()!);
    if (drop.length === 0) return;
    try {
      // Oldest first, so a crash part-way leaves a contiguous run of segments.
      for (const s of drop) await fsp.unlink(s.file);
      await fsyncDir(this.dir);
    } catch (err) {
      throw storageError(err, `${vm}: cannot delete released segments`);
    }
  }
}
