import fsp, { type FileHandle } from 'node:fs/promises';
import { BLOCK_SUM_BYTES, type Sums } from '@site-recovery/shared';

/**
 * One answer of the processor to a sums request: the replica's block sums of every disk, written to a
 * file in the data dir as they arrive (a 1 TiB disk has 4 GiB of them at 4 KiB blocks, too many to
 * hold in memory) and read back chunk by chunk by the copy. The file is scratch: after a restart the
 * sums are asked for again, so it is never synced.
 *
 * Each disk's sums must arrive in block order without gaps (disks in any order); a message that
 * starts a disk at block 0 again restarts that disk (the processor began its answer afresh, say for a
 * request sent again after a reconnection), which also clears a gap seen on it. A gap left in place, or
 * a message for another block size or disk layout, makes the answer unusable: {@link ReplicaSums.problem}
 * says why. The sums before a gap stay usable ({@link ReplicaSums.has}).
 */
export class ReplicaSums {
  private readonly blocks: number[];
  /** Where each disk's sums begin in the file. */
  private readonly base: number[];
  private next: number[];
  /** What makes the whole answer unusable (a wrong block size or disk, a failed write). */
  private trouble: string | undefined;
  /** A gap or bad message on one disk, until a restart of that disk at block 0. */
  private diskTrouble: (string | undefined)[];
  private pending = 0;
  private writes = new Set<Promise<void>>();
  private drainWaiters: (() => void)[] = [];

  private constructor(
    private readonly file: string,
    private readonly fh: FileHandle,
    disks: readonly { readonly size: number }[],
    readonly blockBytes: number,
    /** {@link take} returns a promise while more than this many bytes wait to be written. */
    private readonly maxPendingBytes: number,
  ) {
    this.blocks = disks.map((d) => Math.ceil(d.size / blockBytes));
    let at = 0;
    this.base = this.blocks.map((n) => ((at += n * BLOCK_SUM_BYTES), at - n * BLOCK_SUM_BYTES));
    this.next = this.blocks.map(() => 0);
    this.diskTrouble = this.blocks.map(() => undefined);
  }

  /** A new, empty answer in `file` (what it held is dropped). */
  static async open(
    file: string,
    disks: readonly { readonly size: number }[],
    blockBytes: number,
    maxPendingBytes = 16 * 1024 * 1024,
  ): Promise<ReplicaSums> {
    const fh = await fsp.open(file, 'w+', 0o600);
    return new ReplicaSums(file, fh, disks, blockBytes, maxPendingBytes);
  }

  /** Blocks of all disks. */
  get totalBlocks(): number {
    return this.blocks.reduce((n, b) => n + b, 0);
  }

  /** Blocks whose sums arrived (in order) so far. */
  get receivedBlocks(): number {
    return this.next.reduce((n, b) => n + b, 0);
  }

  /** Why the answer cannot be used, if it cannot. */
  get problem(): string | undefined {
    return this.trouble ?? this.diskTrouble.find((t) => t !== undefined);
  }

  /** Whether every block of every disk has its sum (and nothing went wrong). */
  get complete(): boolean {
    return this.problem === undefined && this.next.every((n, d) => n === this.blocks[d]);
  }

  /** Whether the sums of `disk`'s blocks below `end` have arrived (in order; the prefix before a problem counts). */
  has(disk: number, end: number): boolean {
    return (this.next[disk] ?? 0) >= end;
  }

  /** Forgets what arrived: a new request was sent, and its answer starts from nothing. */
  reset(): void {
    this.next = this.blocks.map(() => 0);
    this.trouble = undefined;
    this.diskTrouble = this.blocks.map(() => undefined);
  }

  /**
   * Takes one `sums` message. Returns a promise while too much waits to be written: the caller stops
   * reading its connection until it resolves.
   */
  take(m: Sums): Promise<void> | undefined {
    if (this.trouble !== undefined) return undefined;
    if (m.blockBytes !== this.blockBytes) {
      this.trouble = `sums of ${m.blockBytes}-byte blocks, asked for ${this.blockBytes}`;
      return undefined;
    }
    if (this.blocks[m.disk] === undefined) {
      this.trouble = `sums of disk ${m.disk}, the VM has ${this.blocks.length}`;
      return undefined;
    }
    if (m.first === 0) this.diskTrouble[m.disk] = undefined;
    if (this.diskTrouble[m.disk] !== undefined) return undefined;
    const why = this.check(m);
    if (why !== undefined) {
      this.diskTrouble[m.disk] = why;
      return undefined;
    }
    const count = m.sums.length / BLOCK_SUM_BYTES;
    // A copy: the message is a view into its frame, which the connection may reuse.
    const bytes = Buffer.from(m.sums);
    const write = this.fh
      .write(bytes, 0, bytes.length, this.base[m.disk]! + m.first * BLOCK_SUM_BYTES)
      .then(
        () => undefined,
        (err: Error) => void (this.trouble ??= `writing the sums to ${this.file} failed: ${err.message}`),
      )
      .finally(() => {
        this.pending -= bytes.length;
        this.writes.delete(write);
        if (this.pending <= this.maxPendingBytes / 2) this.drainWaiters.splice(0).forEach((w) => w());
      });
    this.writes.add(write);
    this.pending += bytes.length;
    this.next[m.disk] = m.first + count;
    if (this.pending <= this.maxPendingBytes) return undefined;
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /** What is wrong with a message for a known disk and the right block size, if anything is. */
  private check(m: Sums): string | undefined {
    const blocks = this.blocks[m.disk]!;
    if (m.sums.length === 0 || m.sums.length % BLOCK_SUM_BYTES !== 0)
      return `a sums message of ${m.sums.length} bytes, not a whole number of ${BLOCK_SUM_BYTES}-byte sums`;
    const count = m.sums.length / BLOCK_SUM_BYTES;
    if (m.first !== this.next[m.disk] && m.first !== 0)
      return `sums of disk ${m.disk} from block ${m.first}, expected block ${this.next[m.disk]}`;
    if (m.first + count > blocks) return `sums of disk ${m.disk} past its last block (${blocks - 1})`;
    return undefined;
  }

  /** Resolves once every sum taken so far is in the file. */
  async flushed(): Promise<void> {
    while (this.writes.size > 0) await Promise.all(this.writes);
  }

  /** The sums of blocks `first` .. `first + count - 1` of `disk`. */
  async read(disk: number, first: number, count: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(count * BLOCK_SUM_BYTES);
    const { bytesRead } = await this.fh.read(out, 0, out.length, this.base[disk]! + first * BLOCK_SUM_BYTES);
    if (bytesRead !== out.length) throw new Error(`${this.file} ends before the sums of disk ${disk} block ${first}`);
    return out;
  }

  /** Closes the file; `remove` deletes it too (the copy is complete, its sums are of no more use). */
  async close(remove: boolean): Promise<void> {
    await this.flushed();
    await this.fh.close();
    if (remove) await fsp.rm(this.file, { force: true });
  }
}
