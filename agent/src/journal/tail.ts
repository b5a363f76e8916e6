/**
 * The newest bytes of the segment being written, kept in memory so that the shipper, which reads
 * right behind the writer, reads them without I/O. Large groups bypass the page cache
 * (DirectAppender), so without this the shipper would read them back from the disk moments after
 * they were written. A ring: it holds the last `capacity` bytes written contiguously to one file;
 * a write to another file (a roll) or elsewhere starts it afresh.
 */
export class JournalTail {
  private ring: Buffer | undefined;
  private file: string | undefined;
  /** File offsets [start, end) are in the ring. */
  private start = 0;
  private end = 0;

  /** @param capacity bytes kept; 0 keeps nothing. */
  constructor(private readonly capacity: number) {}

  /** Notes that `bufs` were written back to back at `at` of `file`. */
  wrote(file: string, at: number, bufs: readonly Buffer[]): void {
    if (this.capacity === 0) return;
    if (file !== this.file || at !== this.end) {
      this.file = file;
      this.start = this.end = at;
    }
    const ring = (this.ring ??= Buffer.allocUnsafeSlow(this.capacity));
    for (const b of bufs) {
      // Only the last `capacity` bytes of a long write can stay.
      const skip = Math.max(0, b.length - this.capacity);
      let from = skip;
      let pos = this.end + skip;
      while (from < b.length) {
        const at = pos % this.capacity;
        const n = Math.min(b.length - from, this.capacity - at);
        b.copy(ring, at, from, from + n);
        from += n;
        pos += n;
      }
      this.end += b.length;
    }
    this.start = Math.max(this.start, this.end - this.capacity);
  }

  /** Fills `into` with bytes [pos, pos + into.length) of `file` when the ring holds all of them. */
  read(file: string, pos: number, into: Buffer): boolean {
    if (this.ring === undefined || file !== this.file || pos < this.start || pos + into.length > this.end) return false;
    let done = 0;
    while (done < into.length) {
      const at = (pos + done) % this.capacity;
      const n = Math.min(into.length - done, this.capacity - at);
      this.ring.copy(into, done, at, at + n);
      done += n;
    }
    return true;
  }

  /** Forgets everything (the journal failed or closed). */
  clear(): void {
    this.file = undefined;
    this.start = this.end = 0;
  }
}
