import fsp from 'node:fs/promises';
import path from 'node:path';
import { ErrorCode, closeFd, fdatasync, fsyncDir, isSrError, pwrite, type Logger } from '@site-recovery/shared';
import { openFd, storageError } from './storage-errors.js';

/**
 * Room held back on the data directory's file system for the small writes that free space: recording
 * a release (the VM's meta file) before the released segments are deleted. When the disk fills with
 * frames the processor has not confirmed yet, its confirmations must still go through, or nothing ever
 * frees a byte. 1 MiB holds a few hundred meta writes, and the first release that goes through frees
 * whole segments.
 */
export const DEFAULT_RESERVE_BYTES = 1024 * 1024;

/**
 * A file of zeroes held as reserve (names.ts `reserveFile`). A write that meets a full disk with
 * {@link withRoom} gives the reserve back and tries once more; the reserve is taken again by
 * {@link refill} once space has returned.
 */
export class SpaceReserve {
  private held = false;
  private refilling: Promise<void> | undefined;
  /** Times the reserve was given back: a write that failed after one may try again too. */
  private spent = 0;

  private constructor(
    private readonly file: string,
    private readonly bytes: number,
    private readonly log: Logger | undefined,
  ) {}

  /** Takes the reserve at start (or finds it taken); a disk already too full is logged, not refused. */
  static async open(file: string, bytes: number, log: Logger | undefined): Promise<SpaceReserve> {
    const reserve = new SpaceReserve(file, bytes, log);
    if (bytes > 0) await reserve.refill();
    return reserve;
  }

  /** Whether the reserve is held now (the status says when it was spent). */
  get ready(): boolean {
    return this.held || this.bytes === 0;
  }

  /**
   * Runs `write`; if it fails for lack of space while the reserve is held, gives the reserve back and
   * runs it again. The caller frees space after it (deleting segments) and then calls {@link refill}.
   */
  async withRoom<T>(write: () => Promise<T>): Promise<T> {
    const spent = this.spent;
    try {
      return await write();
    } catch (err) {
      if (!isSrError(err, ErrorCode.NO_SPACE)) throw err;
      if (this.held) {
        await this.release();
        this.log?.warn({ file: this.file }, 'disk full: the space reserve was given back to record a release');
      } else if (this.spent === spent) {
        throw err;
      }
      return write();
    }
  }

  /** Takes the reserve again if it is not held; a disk still too full leaves it for the next call. */
  refill(): Promise<void> {
    if (this.held || this.bytes === 0) return Promise.resolve();
    this.refilling ??= this.take().finally(() => (this.refilling = undefined));
    return this.refilling;
  }

  private async take(): Promise<void> {
    try {
      const fd = await openFd(this.file, 'w');
      try {
        // Written, not just sized: a sparse file would hold back nothing.
        const chunk = Buffer.alloc(Math.min(this.bytes, 64 * 1024));
        for (let at = 0; at < this.bytes; at += chunk.length)
          await pwrite(fd, chunk.subarray(0, Math.min(chunk.length, this.bytes - at)), at);
        await fdatasync(fd);
      } finally {
        await closeFd(fd);
      }
      await fsyncDir(path.dirname(this.file));
      this.held = true;
    } catch (err) {
      await fsp.rm(this.file, { force: true }).catch(() => undefined);
      const e = storageError(err, `cannot hold the space reserve ${this.file}`);
      this.log?.warn({ err: e.message, code: e.code }, 'space reserve not held; taken again once there is room');
    }
  }

  private async release(): Promise<void> {
    this.held = false;
    this.spent++;
    await fsp.rm(this.file, { force: true });
    await fsyncDir(path.dirname(this.file)).catch(() => undefined);
  }
}
