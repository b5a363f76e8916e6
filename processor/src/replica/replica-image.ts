import fs from 'node:fs';
import {
  ErrorCode,
  SrError,
  closeFd,
  fdatasync,
  fsyncFd,
  pread,
  pwrite,
  pwriteSync,
  systemErrorCode,
} from '@site-recovery/shared';

/** Zeroing reads the range in slices of this size and writes zeroes only where it finds data. */
const ZERO_SLICE = 1 << 20;
/** Granularity at which zeroing skips ranges that already read as zero: the usual filesystem block. */
const ZERO_BLOCK = 4096;
const ZEROES = Buffer.alloc(ZERO_SLICE);

/**
 * One replica disk: a sparse raw image file of the source disk's size. Zeroing never allocates: Node
 * has no fallocate(PUNCH_HOLE), so instead of writing zero buffers (which would fill a thin replica)
 * it reads the range and overwrites only the blocks that hold data.
 */
export class ReplicaImage {
  private constructor(
    readonly file: string,
    private readonly fd: number,
    readonly size: number,
    private readonly inlineMax: number,
  ) {}

  /**
   * Opens an existing image. `repair` (allowed while the replica holds no applied data) creates a
   * missing file or corrects a wrong size; otherwise either is refused with SR_BAD_DISK.
   */
  static open(file: string, size: number, inlineMax: number, repair: boolean): ReplicaImage {
    let fd: number;
    try {
      fd = fs.openSync(file, 'r+');
    } catch (err) {
      if (systemErrorCode(err) === 'ENOENT' && repair) return ReplicaImage.create(file, size, inlineMax);
      throw new SrError(ErrorCode.BAD_DISK, `cannot open replica disk ${file}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const actual = fs.fstatSync(fd).size;
    if (actual !== size) {
      if (!repair) {
        fs.closeSync(fd);
        throw new SrError(
          ErrorCode.BAD_DISK,
          `replica disk ${file} is ${actual} bytes, its state says ${size}; the replica cannot be trusted`,
        );
      }
      fs.ftruncateSync(fd, size);
    }
    return new ReplicaImage(file, fd, size, inlineMax);
  }

  /** Creates (or truncates) the image as all zeroes, without allocating space. */
  static create(file: string, size: number, inlineMax: number): ReplicaImage {
    const fd = fs.openSync(file, 'w+', 0o600);
    try {
      fs.ftruncateSync(fd, size);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
    return new ReplicaImage(file, fd, size, inlineMax);
  }

  /** Synchronous (`undefined`) for payloads up to the inline limit: a page-cache copy beats a thread-pool hop. */
  write(offset: number, data: Buffer): Promise<void> | undefined {
    if (data.length <= this.inlineMax) {
      pwriteSync(this.fd, data, offset);
      return undefined;
    }
    return pwrite(this.fd, data, offset);
  }

  zero(offset: number, length: number): Promise<void> | undefined {
    if (length <= this.inlineMax && length <= ZERO_SLICE) {
      const buf = Buffer.allocUnsafe(length);
      readFullSync(this.fd, buf, offset);
      forEachDataRun(buf, offset, (at, n) => pwriteSync(this.fd, ZEROES.subarray(0, n), at));
      return undefined;
    }
    return this.zeroLarge(offset, length);
  }

  private async zeroLarge(offset: number, length: number): Promise<void> {
    for (let done = 0; done < length; done += ZERO_SLICE) {
      const at = offset + done;
      const buf = await pread(this.fd, Math.min(ZERO_SLICE, length - done), at);
      const writes: Promise<void>[] = [];
      forEachDataRun(buf, at, (pos, n) => writes.push(pwrite(this.fd, ZEROES.subarray(0, n), pos)));
      await Promise.all(writes);
    }
  }

  /**
   * Makes the whole image read as zeroes and frees its space (truncate to nothing and back), durably.
   * A new generation's initial copy sends only non-zero chunks, so it needs a zeroed replica under it.
   */
  async wipe(): Promise<void> {
    fs.ftruncateSync(this.fd, 0);
    fs.ftruncateSync(this.fd, this.size);
    await fsyncFd(this.fd);
  }

  read(offset: number, length: number): Promise<Buffer> {
    return pread(this.fd, length, offset);
  }

  flush(): Promise<void> {
    return fdatasync(this.fd);
  }

  close(): Promise<void> {
    return closeFd(this.fd);
  }
}

function readFullSync(fd: number, buf: Buffer, position: number): void {
  for (let done = 0; done < buf.length;) {
    const n = fs.readSync(fd, buf, done, buf.length - done, position + done);
    if (n === 0) {
      buf.fill(0, done); // past EOF reads as zeroes, as pread does
      return;
    }
    done += n;
  }
}

/**
 * Calls `fn(position, length)` for each maximal run of blocks in `buf` (read from `base`) that holds
 * a non-zero byte. Blocks are aligned to absolute offsets so that runs match filesystem blocks.
 */
function forEachDataRun(buf: Buffer, base: number, fn: (position: number, length: number) => void): void {
  let runStart = -1;
  let i = 0;
  while (i < buf.length) {
    const end = Math.min(buf.length, i + ZERO_BLOCK - ((base + i) % ZERO_BLOCK));
    const zero = buf.compare(ZEROES, 0, end - i, i, end) === 0;
    if (!zero && runStart < 0) runStart = i;
    if (zero && runStart >= 0) {
      fn(base + runStart, i - runStart);
      runStart = -1;
    }
    i = end;
  }
  if (runStart >= 0) fn(base + runStart, buf.length - runStart);
}
