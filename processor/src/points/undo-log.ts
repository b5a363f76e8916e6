import fs from 'node:fs';
import { ErrorCode, SrError, closeFd, crc32c, fdatasync, pread, pwritev } from '@site-recovery/shared';

/**
 * One recovery point's undo log: the contents blocks had at that point, saved just before each was
 * first overwritten after it (copy-on-write). Append-only; each entry restores one whole block.
 *
 * File layout (big-endian):
 *   header  0 "SRUNDO01"   8 u32 block size   12 u32 CRC-32C of bytes 0-11
 *   entry   0 u32 ENTRY_MAGIC   4 u16 disk index   6 u8 flags (1: the block read as zeroes, no payload)
 *           7 u8 0   8 u64 byte offset of the block   16 u32 block length   20 u32 CRC-32C of bytes 0-19
 *           and the payload   24 payload (block length bytes, absent with the zero flag)
 * A crash mid-append leaves a torn tail: scanning stops at the first entry that does not verify and
 * `open` truncates there. Entries are only ever trusted after an fdatasync, so nothing past a torn
 * entry can have protected a replica write.
 */
const UNDO_HEADER_BYTES = 16;
const UNDO_ENTRY_HEADER_BYTES = 24;
const FILE_MAGIC = Buffer.from('SRUNDO01', 'latin1');
const ENTRY_MAGIC = 0x55444f31; // "UDO1"
const FLAG_ZERO = 1;
/** Scans read the log in slices of this size. */
const SCAN_SLICE = 4 << 20;

export interface UndoEntry {
  readonly disk: number;
  /** Byte offset of the block on its disk (a multiple of the block size). */
  readonly offset: number;
  readonly length: number;
  /** The block's old bytes; `undefined` when they were all zero. */
  readonly data: Buffer | undefined;
}

/** Per disk: block index → file offset of the entry that saved it. */
type BlockIndex = Map<number, number>[];

export class UndoLog {
  private constructor(
    readonly file: string,
    private fd: number,
    readonly blockSize: number,
    /** Bytes of verified, durable entries (the append position). */
    private committed: number,
    private readonly index: BlockIndex,
    private count: number,
  ) {}

  /** Creates an empty log durably (the caller makes its directory entry durable). */
  static async create(file: string, blockSize: number): Promise<UndoLog> {
    const fd = fs.openSync(file, 'wx+', 0o600);
    try {
      await pwritev(fd, [header(blockSize)], 0);
      await fdatasync(fd);
    } catch (err) {
      fs.closeSync(fd);
      fs.rmSync(file, { force: true }); // a cut that failed (a full disk) leaves no log behind
      throw err;
    }
    return new UndoLog(file, fd, blockSize, UNDO_HEADER_BYTES, [], 0);
  }

  /** Opens a log, rebuilding its block index; a torn tail is cut off. */
  static async open(file: string, blockSize: number): Promise<UndoLog> {
    const fd = fs.openSync(file, 'r+');
    try {
      const head = await pread(fd, UNDO_HEADER_BYTES, 0);
      if (!validHeader(head)) throw new SrError(ErrorCode.BAD_DISK, `undo log ${file} has no valid header`);
      const found = head.readUInt32BE(8);
      if (found !== blockSize)
        throw new SrError(
          ErrorCode.STATE_MISMATCH,
          `undo log ${file} uses ${found}-byte blocks, the catalog says ${blockSize}`,
        );
      const index: BlockIndex = [];
      let count = 0;
      const end = await scanFd(fd, Infinity, (e, at) => {
        blockMap(index, e.disk).set(e.offset / blockSize, at);
        count++;
      });
      if (fs.fstatSync(fd).size !== end) {
        fs.ftruncateSync(fd, end);
        await fdatasync(fd);
      }
      return new UndoLog(file, fd, blockSize, end, index, count);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  /** Bytes of durable entries, header included. */
  get bytes(): number {
    return this.committed;
  }

  get entries(): number {
    return this.count;
  }

  has(disk: number, block: number): boolean {
    return this.index[disk]?.has(block) ?? false;
  }

  /**
   * Appends entries and makes them durable with one fdatasync; the index shows them only after
   * that. A failure cuts the file back to what was durable, so the next append starts clean.
   */
  async append(entries: readonly UndoEntry[]): Promise<void> {
    if (entries.length === 0) return;
    if (this.fd < 0) this.fd = fs.openSync(this.file, 'r+');
    const bufs: Buffer[] = [];
    const offsets: number[] = [];
    let at = this.committed;
    for (const e of entries) {
      const h = entryHeader(e);
      bufs.push(h);
      if (e.data !== undefined) bufs.push(e.data);
      offsets.push(at);
      at += h.length + (e.data?.length ?? 0);
    }
    try {
      // writev takes at most IOV_MAX (1024) buffers per call.
      let pos = this.committed;
      for (let i = 0; i < bufs.length; i += 1024) {
        const part = bufs.slice(i, i + 1024);
        await pwritev(this.fd, part, pos);
        pos += part.reduce((s, b) => s + b.length, 0);
      }
      await fdatasync(this.fd);
    } catch (err) {
      try {
        fs.ftruncateSync(this.fd, this.committed);
      } catch {
        // the next open truncates the torn tail anyway
      }
      throw err;
    }
    entries.forEach((e, i) => blockMap(this.index, e.disk).set(e.offset / this.blockSize, offsets[i]!));
    this.committed = at;
    this.count += entries.length;
  }

  /** Calls `fn` for every entry in file order, reading through a descriptor of its own. */
  async forEach(fn: (e: UndoEntry) => Promise<void> | void, upTo = this.committed): Promise<void> {
    await scanFile(this.file, upTo, fn);
  }

  /** Closes the descriptor (a closed point's log needs none); the index stays and `append` reopens it. */
  async close(): Promise<void> {
    const fd = this.fd;
    this.fd = -1;
    if (fd >= 0) await closeFd(fd);
  }
}

/**
 * Reads entries of the log at `file` up to byte `upTo` (its durable length when it was snapshot),
 * with a descriptor of its own so a concurrent append or close cannot disturb the reader.
 */
export async function scanFile(file: string, upTo: number, fn: (e: UndoEntry) => Promise<void> | void): Promise<void> {
  const fd = fs.openSync(file, 'r');
  try {
    const head = await pread(fd, UNDO_HEADER_BYTES, 0);
    if (!validHeader(head)) throw new SrError(ErrorCode.BAD_DISK, `undo log ${file} has no valid header`);
    await scanFd(fd, upTo, fn);
  } finally {
    fs.closeSync(fd);
  }
}

/** Walks verified entries from the header on; returns the offset after the last one. */
async function scanFd(
  fd: number,
  upTo: number,
  fn: (e: UndoEntry, at: number) => Promise<void> | void,
): Promise<number> {
  const size = Math.min(fs.fstatSync(fd).size, upTo);
  let pos = UNDO_HEADER_BYTES;
  let buf: Buffer = Buffer.alloc(0);
  let bufAt = pos;
  const ensure = async (from: number, n: number): Promise<boolean> => {
    if (from + n > size) return false;
    if (from >= bufAt && from + n <= bufAt + buf.length) return true;
    buf = await pread(fd, Math.min(size - from, Math.max(n, SCAN_SLICE)), from);
    bufAt = from;
    return true;
  };
  for (;;) {
    if (!(await ensure(pos, UNDO_ENTRY_HEADER_BYTES))) return pos;
    const h = buf.subarray(pos - bufAt, pos - bufAt + UNDO_ENTRY_HEADER_BYTES);
    if (h.readUInt32BE(0) !== ENTRY_MAGIC || h[7] !== 0) return pos;
    const flags = h[6]!;
    const length = h.readUInt32BE(16);
    const payload = flags & FLAG_ZERO ? 0 : length;
    if ((flags & ~FLAG_ZERO) !== 0 || length === 0) return pos;
    if (!(await ensure(pos, UNDO_ENTRY_HEADER_BYTES + payload))) return pos;
    const h2 = buf.subarray(pos - bufAt, pos - bufAt + UNDO_ENTRY_HEADER_BYTES);
    const data =
      payload > 0
        ? buf.subarray(pos - bufAt + UNDO_ENTRY_HEADER_BYTES, pos - bufAt + UNDO_ENTRY_HEADER_BYTES + payload)
        : undefined;
    let crc = crc32c(h2.subarray(0, 20));
    if (data !== undefined) crc = crc32c(data, crc);
    if (crc !== h2.readUInt32BE(20)) return pos;
    // Copy the payload out: the slice buffer is reused by the next read.
    await fn(
      { disk: h2.readUInt16BE(4), offset: Number(h2.readBigUInt64BE(8)), length, data: data && Buffer.from(data) },
      pos,
    );
    pos += UNDO_ENTRY_HEADER_BYTES + payload;
  }
}

function header(blockSize: number): Buffer {
  const b = Buffer.alloc(UNDO_HEADER_BYTES);
  FILE_MAGIC.copy(b, 0);
  b.writeUInt32BE(blockSize, 8);
  b.writeUInt32BE(crc32c(b.subarray(0, 12)), 12);
  return b;
}

function validHeader(b: Buffer): boolean {
  return (
    b.length === UNDO_HEADER_BYTES &&
    b.subarray(0, 8).equals(FILE_MAGIC) &&
    crc32c(b.subarray(0, 12)) === b.readUInt32BE(12)
  );
}

function entryHeader(e: UndoEntry): Buffer {
  const h = Buffer.alloc(UNDO_ENTRY_HEADER_BYTES);
  h.writeUInt32BE(ENTRY_MAGIC, 0);
  h.writeUInt16BE(e.disk, 4);
  h[6] = e.data === undefined ? FLAG_ZERO : 0;
  h.writeBigUInt64BE(BigInt(e.offset), 8);
  h.writeUInt32BE(e.length, 16);
  let crc = crc32c(h.subarray(0, 20));
  if (e.data !== undefined) crc = crc32c(e.data, crc);
  h.writeUInt32BE(crc, 20);
  return h;
}

function blockMap(index: BlockIndex, disk: number): Map<number, number> {
  let m = index[disk];
  if (m === undefined) index[disk] = m = new Map<number, number>();
  return m;
}
