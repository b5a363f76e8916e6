/**
 * Bytes received from a socket, kept as the chunks they arrived in. Reading a field that spans chunks
 * copies only that field; taking a payload that lies inside one chunk is zero-copy.
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  private head = 0; // consumed bytes of chunks[0]
  private total = 0;

  get length(): number {
    return this.total;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.total += chunk.length;
  }

  /** The first `n` bytes without consuming them; caller checks `length >= n` first. */
  peek(n: number): Buffer {
    const first = this.chunks[0];
    if (first !== undefined && first.length - this.head >= n) return first.subarray(this.head, this.head + n);
    return this.copyFront(Buffer.allocUnsafe(n));
  }

  /** Whether the first `n` bytes lie in one received chunk (so `take(n)` copies nothing). */
  isContiguous(n: number): boolean {
    const first = this.chunks[0];
    return first !== undefined && first.length - this.head >= n;
  }

  /** Removes `target.length` bytes into `target`; caller checks `length >= target.length` first. */
  takeInto(target: Buffer): void {
    this.copyFront(target);
    this.skip(target.length);
  }

  /** Copies the first `target.length` bytes into `target`, across chunks. */
  private copyFront(target: Buffer): Buffer {
    const n = target.length;
    let copied = 0;
    let skip = this.head;
    for (const c of this.chunks) {
      const take = Math.min(c.length - skip, n - copied);
      c.copy(target, copied, skip, skip + take);
      copied += take;
      skip = 0;
      if (copied === n) break;
    }
    return target;
  }

  /** Removes and returns `n` bytes; caller checks `length >= n` first. */
  take(n: number): Buffer {
    const out = this.peek(n);
    this.skip(n);
    return out;
  }

  /** Drops up to `n` bytes; returns how many were dropped. */
  skip(n: number): number {
    let left = Math.min(n, this.total);
    const dropped = left;
    while (left > 0) {
      const first = this.chunks[0]!;
      const avail = first.length - this.head;
      if (avail > left) {
        this.head += left;
        left = 0;
      } else {
        left -= avail;
        this.chunks.shift();
        this.head = 0;
      }
    }
    this.total -= dropped;
    return dropped;
  }

  clear(): void {
    this.chunks = [];
    this.head = 0;
    this.total = 0;
  }
}
