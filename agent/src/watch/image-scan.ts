import fsp from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  BLOCK_SUM_BYTES,
  ErrorCode,
  RecordKind,
  SrError,
  blockSums,
  zeroBlockSum,
  type ChangeRecord,
  type Logger,
} from '@site-recovery/shared';
import type { LsnSequence } from '../backend/capture-filter.js';
import type { Journal } from '../journal/journal.js';
import type { ShippedSums } from './shipped-sums.js';
import type { WatchLimits } from './watch-config.js';

/** One watched disk: its image and the sums of what was last shipped of it. */
export interface ScannedDisk {
  readonly id: string;
  readonly path: string;
  /** The size in the generation's disk layout. */
  readonly size: number;
  readonly sums: ShippedSums;
}

/** What one scan did, as the status shows it. */
export interface ScanReport {
  readonly seq: number;
  readonly startedAt: string;
  readonly endedAt: string;
  readonly bytesRead: number;
  /** Blocks whose sum differed from the one last shipped: each went out as a WRITE or a ZERO. */
  readonly blocksChanged: number;
  /** Payload bytes journaled as WRITE records (zero blocks go as ZERO records, without payload). */
  readonly bytesShipped: number;
  /** No write overlapped the scan: the replica, once it has the scan's records, is the image as it stood. */
  readonly clean: boolean;
  /** Why the scan was not clean. */
  readonly unclean?: string;
  /** LSN of the SCAN marker a clean scan journaled (none when nothing was shipped since the last one). */
  readonly markerLsn?: number;
  /** The newest modification time seen among the images (ms since the epoch). */
  readonly modifiedMs: number;
}

/** An image's size is not the one in the generation's disk layout: a new generation is needed. */
export class DiskResized extends SrError {
  constructor(
    readonly disk: string,
    readonly from: number,
    readonly to: number,
  ) {
    super(ErrorCode.STATE_MISMATCH, `disk ${disk} was resized from ${from} to ${to} bytes`);
  }
}

export interface ImageScannerOptions {
  readonly disks: readonly ScannedDisk[];
  readonly journal: Journal;
  readonly lsns: LsnSequence;
  readonly limits: WatchLimits;
  /** How many change events have arrived so far (any that arrives during a scan makes it unclean). */
  readonly activity: () => number;
  /** Whether the generation's first full scan (its initial copy) has been journaled already. */
  readonly copyComplete: boolean;
  /** Called with the journal synced through `lsn`: save the sums (and the synced LSN). */
  readonly persist: (lsn: number) => Promise<void>;
  /** Called once the first full scan's final SYNC marker is synced. */
  readonly onCopyComplete: () => Promise<void>;
  readonly log: Logger;
}

interface ImageStat {
  readonly size: number;
  readonly mtimeMs: number;
  readonly ino: number;
}

/**
 * Finds what changed in the images since it was last shipped, by block checksum, and journals it under
 * the next LSNs (a WRITE per run of changed blocks, a ZERO per run of zero blocks), so the journal, the
 * shipper, the cache-store and the processor handle it as they handle a fronted VM's writes. A clean
 * scan (see {@link ScanReport.clean}) ends with a SCAN marker: the one place a point may be cut.
 */
export class ImageScanner {
  private seq = 0;
  private copyComplete: boolean;
  /** Records were journaled since the last SCAN marker (unknown after a start, so assumed). */
  private sinceMarker = true;
  private stopped = false;
  private scanned = 0;
  private readonly totalBytes: number;
  private readonly buf: Buffer;

  constructor(private readonly o: ImageScannerOptions) {
    this.copyComplete = o.copyComplete;
    this.totalBytes = o.disks.reduce((n, d) => n + d.size, 0);
    this.buf = Buffer.allocUnsafe(o.limits.readBytes);
  }

  /** Bytes of the disks read by the scan running now (0 between scans), and their total. */
  progress(): { scannedBytes: number; totalBytes: number } {
    return { scannedBytes: this.scanned, totalBytes: this.totalBytes };
  }

  get initialCopyDone(): boolean {
    return this.copyComplete;
  }

  /** Makes a running scan end at its next step with SR_SHUTTING_DOWN. */
  stop(): void {
    this.stopped = true;
  }

  /**
   * One pass over every disk. Rejects with {@link DiskResized} when an image's size left the layout, and
   * with the read's error when an image cannot be read (the next scan starts over; blocks already
   * journaled have their sums and are not sent again).
   */
  async scan(): Promise<ScanReport> {
    const seq = ++this.seq;
    const startedAt = Date.now();
    const events = this.o.activity();
    const before = await Promise.all(this.o.disks.map((d) => statImage(d)));
    let bytesRead = 0;
    let blocksChanged = 0;
    let bytesShipped = 0;
    let unclean: string | undefined;
    let lastSave = startedAt;
    let nextMark = this.o.limits.markEveryBytes;
    this.scanned = 0;
    try {
      for (const [i, d] of this.o.disks.entries()) {
        const fh = await fsp.open(d.path, 'r');
        try {
          // Reading another file than the one stat'ed before: it was replaced meanwhile.
          if ((await fh.stat()).ino !== before[i]!.ino) unclean ??= `the image of disk ${d.id} was replaced`;
          for (let off = 0; off < d.size; off += this.o.limits.readBytes) {
            if (this.stopped) throw new SrError(ErrorCode.SHUTTING_DOWN, 'the agent is stopping');
            const n = Math.min(this.o.limits.readBytes, d.size - off);
            const { bytesRead: got } = await fh.read(this.buf, 0, n, off);
            if (got < n) throw new DiskResized(d.id, d.size, (await fh.stat()).size);
            bytesRead += n;
            this.scanned += n;
            const shipped = await this.shipChanged(i, d, off, this.buf.subarray(0, n));
            blocksChanged += shipped.blocks;
            bytesShipped += shipped.bytes;
            if (!this.copyComplete && this.scanned >= nextMark && this.scanned < this.totalBytes) {
              await this.append({ kind: RecordKind.SYNC, disk: 0, offset: this.scanned, length: 0 });
              nextMark = this.scanned + this.o.limits.markEveryBytes;
            }
            if (Date.now() - lastSave >= this.o.limits.saveIntervalMs) {
              await this.persist();
              lastSave = Date.now();
            }
          }
        } finally {
          await fh.close();
        }
      }
      // Events still on their way (inotify, then chokidar's stat) must count against this scan.
      await this.o.journal.sync();
      if (this.o.limits.settleMs > 0) await sleep(this.o.limits.settleMs);
      const after = await Promise.all(this.o.disks.map((d) => statImage(d)));
      unclean ??= this.uncleanWhy(startedAt, before, after, events);
      if (!this.copyComplete) {
        await this.append({ kind: RecordKind.SYNC, disk: 0, offset: this.totalBytes, length: 0 });
        await this.o.journal.sync();
        this.copyComplete = true;
        await this.o.onCopyComplete();
        this.o.log.info({ bytes: this.totalBytes, clean: unclean === undefined }, 'watch: initial copy complete');
      }
      let markerLsn: number | undefined;
      if (unclean === undefined && this.sinceMarker) {
        markerLsn = await this.append({ kind: RecordKind.SCAN, disk: 0, offset: seq, length: 0 });
        this.sinceMarker = false;
      }
      await this.persist();
      return {
        seq,
        startedAt: new Date(startedAt).toISOString(),
        endedAt: new Date().toISOString(),
        bytesRead,
        blocksChanged,
        bytesShipped,
        clean: unclean === undefined,
        ...(unclean !== undefined ? { unclean } : {}),
        ...(markerLsn !== undefined ? { markerLsn } : {}),
        modifiedMs: Math.max(...after.map((s) => s.mtimeMs)),
      };
    } finally {
      this.scanned = 0;
    }
  }

  private uncleanWhy(
    startedAt: number,
    before: readonly ImageStat[],
    after: readonly ImageStat[],
    events: number,
  ): string | undefined {
    if (this.o.activity() !== events) return 'a change event arrived during the scan';
    for (const [i, d] of this.o.disks.entries()) {
      const b = before[i]!;
      const a = after[i]!;
      if (a.ino !== b.ino) return `the image of disk ${d.id} was replaced during the scan`;
      if (a.size !== b.size || a.mtimeMs !== b.mtimeMs) return `disk ${d.id} was modified during the scan`;
      // A write within the same tick of the coarse clock as the one before would leave the time as it was.
      const quiet = startedAt - b.mtimeMs;
      if (quiet < this.o.limits.debounceMs)
        return `disk ${d.id} was modified ${Math.max(0, Math.round(quiet))} ms before the scan started (less than the debounce)`;
    }
    return undefined;
  }

  /** Journals the runs of blocks of `chunk` (at `off` of disk `i`) whose sums differ from the shipped ones. */
  private async shipChanged(
    i: number,
    d: ScannedDisk,
    off: number,
    chunk: Buffer,
  ): Promise<{ blocks: number; bytes: number }> {
    const block = this.o.limits.blockBytes;
    const sums = blockSums(chunk, block);
    const count = sums.length / BLOCK_SUM_BYTES;
    const first = off / block;
    const sumOf = (k: number): Buffer => sums.subarray(k * BLOCK_SUM_BYTES, (k + 1) * BLOCK_SUM_BYTES);
    const isZero = (k: number): boolean => sumOf(k).equals(zeroBlockSum(Math.min(block, chunk.length - k * block)));
    const appended: Promise<void>[] = [];
    let blocks = 0;
    let bytes = 0;
    for (let k = 0; k < count;) {
      if (d.sums.matches(first + k, sumOf(k))) {
        k++;
        continue;
      }
      const zero = isZero(k);
      let end = k + 1;
      while (end < count && !d.sums.matches(first + end, sumOf(end)) && isZero(end) === zero) end++;
      const from = k * block;
      const to = Math.min(chunk.length, end * block);
      // The read buffer is reused: a WRITE keeps its own copy until the journal has it.
      await this.room();
      const { written } = this.appendNow(
        zero
          ? { kind: RecordKind.ZERO, disk: i, offset: off + from, length: to - from }
          : {
              kind: RecordKind.WRITE,
              disk: i,
              offset: off + from,
              length: to - from,
              data: Buffer.from(chunk.subarray(from, to)),
            },
      );
      appended.push(written);
      for (let b = k; b < end; b++) d.sums.set(first + b, sumOf(b));
      blocks += end - k;
      if (!zero) bytes += to - from;
      k = end;
    }
    await Promise.all(appended);
    return { blocks, bytes };
  }

  /** Appends under the next LSN once the journal has room; resolves to the LSN once it is written. */
  private async append(r: Omit<ChangeRecord, 'lsn' | 'time'>): Promise<number> {
    await this.room();
    const { lsn, written } = this.appendNow(r);
    await written;
    return lsn;
  }

  /** Waits while the journal is at its cap (the cache-store has not acknowledged enough yet). */
  private async room(): Promise<void> {
    const room = this.o.journal.room();
    if (room !== undefined) await room;
  }

  /** Takes the next LSN and appends in the same tick, so that LSN order is append order. */
  private appendNow(r: Omit<ChangeRecord, 'lsn' | 'time'>): { lsn: number; written: Promise<void> } {
    const lsn = this.o.lsns.next();
    this.sinceMarker = true;
    const written = this.o.journal.append({ ...r, lsn, time: Date.now() });
    // Awaited by the caller later, maybe after other waits: a failure must not count as unhandled meanwhile.
    written.catch(() => undefined);
    return { lsn, written };
  }

  private async persist(): Promise<void> {
    await this.o.journal.sync();
    await this.o.persist(this.o.journal.lastLsn);
  }
}

async function statImage(d: ScannedDisk): Promise<ImageStat> {
  const s = await fsp.stat(d.path);
  if (s.size !== d.size) throw new DiskResized(d.id, d.size, s.size);
  return { size: s.size, mtimeMs: s.mtimeMs, ino: s.ino };
}
