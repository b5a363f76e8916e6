import fs from 'node:fs';
import { closeFd, pwrite, pwriteSync } from '@site-recovery/shared';
import { DIRECT_IO_ALIGNMENT, alignUp, allocAligned } from './aligned-buffer.js';
import { PAD_HEADER_BYTES, encodePad, writePadHeader } from './journal-format.js';

export interface DirectAppendOptions {
  /** Size of the page-aligned staging buffer; larger group writes go out in pieces of this size. Default 32 MiB, the largest NBD write. */
  readonly stagingBytes?: number;
  /** Opens a segment for direct writes. Default: `O_WRONLY | O_DIRECT`. Tests inject refusals here. */
  readonly openDirect?: (file: string) => number;
}

const DEFAULT_STAGING_BYTES = 32 * 1024 * 1024;

/** How an append went: `direct` false means the filesystem refused O_DIRECT and the caller must write `end` onward itself. */
export interface DirectAppendResult {
  readonly direct: boolean;
  /** The segment's new end. */
  readonly end: number;
}

/**
 * Appends large group writes to a journal segment with O_DIRECT, past the page cache.
 *
 * Why: the journal is written once and read once, by the shipper, soon after. Through the page cache
 * every journaled byte lands in a freshly allocated page, which on a VM whose freed memory goes back
 * to the host (free page reporting) costs a host page fault per page: on the 1 MiB sequential
 * benchmark the journal's copy into new pages took about three times the CPU of the image's copy
 * into pages it rewrites. A direct write is one DMA from a buffer this process keeps reusing.
 *
 * O_DIRECT wants the file offset, the length and the memory address aligned. Records are copied
 * into one page-aligned staging buffer; a pad (journal-format.ts) written through the page cache
 * brings the segment to the boundary before, and a pad at the end of the staged bytes closes the
 * last block. Small writes stay buffered; they start on a fresh page after a direct write, so no
 * page is ever written both ways.
 */
export class DirectAppender {
  private readonly stagingBytes: number;
  private readonly openDirect: (file: string) => number;
  private staging: Buffer | undefined;
  private fd: number | undefined;
  private file: string | undefined;
  /** Set once the filesystem refuses O_DIRECT; every later append is left to the caller. */
  private refused = false;
  /** After one direct write succeeded, EINVAL is an I/O failure, not a filesystem without O_DIRECT. */
  private wroteOnce = false;

  /** @param written told of every range written (the journal's in-memory tail keeps a copy). */
  constructor(
    options: DirectAppendOptions = {},
    private readonly written: (file: string, at: number, bufs: readonly Buffer[]) => void = () => undefined,
  ) {
    this.stagingBytes = alignUp(options.stagingBytes ?? DEFAULT_STAGING_BYTES);
    this.openDirect = options.openDirect ?? ((file) => fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_DIRECT));
  }

  /** Whether direct writes are in use (false once the filesystem refused them). */
  get active(): boolean {
    return !this.refused;
  }

  /**
   * Writes `bufs` (whole encoded records, back to back) to `file`, whose written content ends at
   * `at`; `bufferedFd` is the segment's ordinary descriptor, used for the leading pad.
   */
  async append(file: string, bufferedFd: number, bufs: readonly Buffer[], at: number): Promise<DirectAppendResult> {
    if (this.refused) return { direct: false, end: at };
    let pos = at;
    const lead = padToBoundary(pos);
    if (lead > 0) {
      const pad = encodePad(lead);
      pwriteSync(bufferedFd, pad, pos);
      this.written(file, pos, [pad]);
      pos += lead;
    }
    const fd = this.open(file);
    if (fd === undefined) return { direct: false, end: pos };
    // Two blocks of slack past stagingBytes hold the end pad.
    const staging = (this.staging ??= allocAligned(this.stagingBytes + 2 * DIRECT_IO_ALIGNMENT));
    let fill = 0;
    for (const b of bufs) {
      let from = 0;
      while (from < b.length) {
        const n = Math.min(b.length - from, this.stagingBytes - fill);
        b.copy(staging, fill, from, from + n);
        fill += n;
        from += n;
        if (fill === this.stagingBytes) {
          const wrote = await this.write(fd, staging.subarray(0, fill), pos);
          if (!wrote) return { direct: false, end: pos };
          this.written(file, pos, [staging.subarray(0, fill)]);
          pos += fill;
          fill = 0;
        }
      }
    }
    if (fill > 0) {
      const tail = padToBoundary(fill);
      if (tail > 0) {
        staging.fill(0, fill, fill + tail);
        writePadHeader(staging, fill, tail);
      }
      const wrote = await this.write(fd, staging.subarray(0, fill + tail), pos);
      if (!wrote) return { direct: false, end: pos };
      this.written(file, pos, [staging.subarray(0, fill + tail)]);
      pos += fill + tail;
    }
    return { direct: true, end: pos };
  }

  /** Opens `file` for direct writes ahead of the first one; a filesystem that refuses O_DIRECT is noted at once. */
  probe(file: string): void {
    this.open(file);
  }

  /** Closes the descriptor of the current segment (the journal calls this when it rolls). */
  async close(): Promise<void> {
    const fd = this.fd;
    this.fd = undefined;
    this.file = undefined;
    if (fd !== undefined) await closeFd(fd);
  }

  private open(file: string): number | undefined {
    if (this.file === file && this.fd !== undefined) return this.fd;
    if (this.fd !== undefined) void closeFd(this.fd).catch(() => undefined);
    this.fd = undefined;
    this.file = undefined;
    try {
      this.fd = this.openDirect(file);
      this.file = file;
      return this.fd;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
      this.refused = true;
      return undefined;
    }
  }

  /**
   * False when the filesystem turns out to refuse direct writes: EINVAL on the very first one, so
   * nothing of this append went out yet and the caller can write all of it from the same place.
   */
  private async write(fd: number, buf: Buffer, pos: number): Promise<boolean> {
    try {
      await pwrite(fd, buf, pos);
      this.wroteOnce = true;
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EINVAL' || this.wroteOnce) throw err;
      this.refused = true;
      await this.close();
      return false;
    }
  }
}

/** Pad that takes content ending at `at` to the next boundary (a block more when the gap is under a pad header). */
function padToBoundary(at: number): number {
  const gap = alignUp(at) - at;
  return gap === 0 || gap >= PAD_HEADER_BYTES ? gap : gap + DIRECT_IO_ALIGNMENT;
}

