import fs from 'node:fs';
import { closeFd, pwriteSync, pwritev } from '@site-recovery/shared';
import { DIRECT_IO_ALIGNMENT, alignUp, allocAligned, isPageAligned, openDirect } from '@site-recovery/shared';
import { PAD_HEADER_BYTES, encodePad, writePadHeader } from './format.js';

export interface DirectAppendOptions {
  /** Size of the page-aligned staging buffer; larger group writes go out in pieces of this size. Default 32 MiB, the largest NBD write. */
  readonly stagingBytes?: number;
  /**
   * Payloads at least this large that lie in page-aligned memory are written from there, not copied
   * into the staging buffer. Default 64 KiB: each costs up to a page of pad in the journal (at most
   * about 6% at this size), and below it the copy costs little.
   */
  readonly inPlaceMinBytes?: number;
  /** Opens a segment (O_DIRECT is in `flags`). Default `fs.openSync`; tests inject refusals here. */
  readonly open?: (file: string, flags: number) => number;
}

const DEFAULT_STAGING_BYTES = 32 * 1024 * 1024;
const DEFAULT_IN_PLACE_MIN_BYTES = 64 * 1024;

/** How an append went: `direct` false means the filesystem refused O_DIRECT and the caller must write `end` onward itself. */
interface DirectAppendResult {
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
 * O_DIRECT wants the file offset, the length and the memory address aligned. A pad
 * (journal-format.ts) written through the page cache brings the segment to the boundary before, and
 * a pad at the end closes the last block. Large payloads the NBD server received into page-aligned
 * memory go out from there, in one vectored write with the rest, which is copied into a page-aligned
 * staging buffer: on the 1 MiB sequential benchmark that copy was the writer's only work between
 * two writes, and one more pass over every byte on a machine whose memory bandwidth the disk's DMA
 * shares. Small writes stay buffered; they start on a fresh page after a direct write, so no page is
 * ever written both ways.
 */
export class DirectAppender {
  private readonly stagingBytes: number;
  private readonly inPlaceMinBytes: number;
  private readonly openFile: (file: string, flags: number) => number;
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
    this.inPlaceMinBytes = options.inPlaceMinBytes ?? DEFAULT_IN_PLACE_MIN_BYTES;
    this.openFile = options.open ?? fs.openSync;
  }

  /** Whether direct writes are in use (false once the filesystem refused them). */
  get active(): boolean {
    return !this.refused;
  }

  /**
   * Writes `bufs` to `file`, whose written content ends at `at`; `bufferedFd` is the segment's
   * ordinary descriptor, used for the leading pad. `bufs` are whole encoded records back to back,
   * each a header followed by its payload if it has one, so a payload is always preceded by its
   * own header.
   *
   * A payload of at least `inPlaceMinBytes` in page-aligned memory (isPageAligned) is written from
   * where it lies: a pad before its header ends the header on a page boundary, so the payload
   * starts on one in the file too. Only its last partial page is copied. Everything else is copied
   * into the staging buffer.
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
    // The write being built: `iov` (page-aligned pieces of page-multiple length), then staging[from, fill).
    let iov: Buffer[] = [];
    let from = 0;
    let fill = 0;
    const flush = async (): Promise<boolean> => {
      if (fill > from) iov.push(staging.subarray(from, fill));
      const bytes = iov.reduce((n, b) => n + b.length, 0);
      if (!(await this.write(fd, iov, pos))) return false;
      this.written(file, pos, iov);
      pos += bytes;
      iov = [];
      from = fill = 0;
      return true;
    };
    for (let i = 0; i < bufs.length; i++) {
      const b = bufs[i]!;
      const payload = bufs[i + 1];
      if (payload !== undefined && this.inPlace(payload)) {
        const pad = padToBoundary(fill + b.length);
        if (fill + pad + b.length <= this.stagingBytes) {
          if (pad > 0) {
            staging.fill(0, fill, fill + pad);
            writePadHeader(staging, fill, pad);
            fill += pad;
          }
          b.copy(staging, fill);
          fill += b.length; // on a page boundary now
          if (fill > from) iov.push(staging.subarray(from, fill));
          from = fill;
          const whole = payload.length - (payload.length % DIRECT_IO_ALIGNMENT);
          iov.push(payload.subarray(0, whole));
          const rest = payload.length - whole;
          if (fill + rest > this.stagingBytes && !(await flush())) return { direct: false, end: pos };
          payload.copy(staging, fill, whole);
          fill += rest;
          i++;
          continue;
        }
      }
      let done = 0;
      while (done < b.length) {
        const n = Math.min(b.length - done, this.stagingBytes - fill);
        b.copy(staging, fill, done, done + n);
        fill += n;
        done += n;
        if (fill === this.stagingBytes && !(await flush())) return { direct: false, end: pos };
      }
    }
    if (fill > 0 || iov.length > 0) {
      const tail = padToBoundary(fill);
      if (tail > 0) {
        staging.fill(0, fill, fill + tail);
        writePadHeader(staging, fill, tail);
        fill += tail;
      }
      if (!(await flush())) return { direct: false, end: pos };
    }
    return { direct: true, end: pos };
  }

  private inPlace(payload: Buffer): boolean {
    return payload.length >= this.inPlaceMinBytes && isPageAligned(payload);
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
    this.fd = openDirect(file, fs.constants.O_WRONLY, this.openFile);
    if (this.fd === undefined) this.refused = true;
    else this.file = file;
    return this.fd;
  }

  /**
   * False when the filesystem turns out to refuse direct writes: EINVAL on the very first one, so
   * nothing of this append went out yet and the caller can write all of it from the same place.
   */
  private async write(fd: number, bufs: Buffer[], pos: number): Promise<boolean> {
    try {
      await pwritev(fd, bufs, pos);
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
