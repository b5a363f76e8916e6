import fs from 'node:fs';
import { ErrorCode, SrError, closeFd, fdatasync, pread, pwrite, pwriteSync } from '@site-recovery/shared';
import type { BlockBackend } from '@site-recovery/shared/nbd';

/** Zero ranges are written in slices of this size from one shared buffer. */
const ZERO_SLICE = 1 << 20;
const ZEROES = Buffer.alloc(ZERO_SLICE);

export interface FileBackendOptions {
  /**
   * Writes up to this many bytes are copied into the page cache with a synchronous pwrite on the
   * event loop instead of a thread-pool round trip. Measured on 2 cores: 4k random writes at queue
   * depth 32 go from ~16k to ~30k IOPS. The cost is that the event loop waits while the kernel
   * throttles dirty pages; 0 sends every write through the thread pool. Default 64 KiB.
   */
  readonly inlineWriteMaxBytes?: number;
}

export const DEFAULT_INLINE_WRITE_MAX_BYTES = 64 * 1024;

/**
 * A disk image file (raw format) as a block backend. One descriptor serves every connection, so a
 * flush covers writes from all of them.
 */
export class FileBackend implements BlockBackend {
  private constructor(
    readonly path: string,
    private readonly fd: number,
    readonly size: number,
    private readonly inlineMax: number,
  ) {}

  static open(path: string, options: FileBackendOptions = {}): FileBackend {
    let fd: number;
    try {
      fd = fs.openSync(path, 'r+');
    } catch (err) {
      throw new SrError(ErrorCode.BAD_DISK, `cannot open disk image ${path}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const size = fs.fstatSync(fd).size;
    if (size === 0) {
      fs.closeSync(fd);
      throw new SrError(
        ErrorCode.BAD_DISK,
        `disk image ${path} is empty; create it with a size first (truncate -s 1G ${path})`,
      );
    }
    return new FileBackend(path, fd, size, options.inlineWriteMaxBytes ?? DEFAULT_INLINE_WRITE_MAX_BYTES);
  }

  read(offset: number, length: number): Promise<Buffer> {
    return pread(this.fd, length, offset);
  }

  async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    if (data.length <= this.inlineMax) pwriteSync(this.fd, data, offset);
    else await pwrite(this.fd, data, offset);
    if (fua) await fdatasync(this.fd);
  }

  async zero(offset: number, length: number, fua: boolean): Promise<void> {
    // Node has no fallocate(PUNCH_HOLE); writing zeroes keeps the result exact at the cost of space.
    const writes: Promise<void>[] = [];
    for (let done = 0; done < length; done += ZERO_SLICE) {
      writes.push(pwrite(this.fd, ZEROES.subarray(0, Math.min(ZERO_SLICE, length - done)), offset + done));
    }
    await Promise.all(writes);
    if (fua) await fdatasync(this.fd);
  }

  trim(offset: number, length: number, fua: boolean): Promise<void> {
    // Trimmed ranges read back as zeroes so that source and replica agree byte for byte.
    return this.zero(offset, length, fua);
  }

  flush(): Promise<void> {
    return fdatasync(this.fd);
  }

  close(): Promise<void> {
    return closeFd(this.fd);
  }
}
