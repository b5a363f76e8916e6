import { Backoff, type BackoffOptions, type Logger } from '@site-recovery/shared';
import type { Journal } from '../journal/journal.js';
import type { DirtyBitmap } from './dirty-bitmap.js';

/** The part of a disk's capture filter the resync copies through (CaptureBackend). */
export interface ResyncTarget {
  /** Journals the range as it is in the image now, ordered against the VM's writes; resolves to its LSN. */
  copyRange(offset: number, length: number, sendZeroes: boolean): Promise<number | undefined>;
}

/** What the resync needs of the mode it runs in (BitmapMode). */
export interface ResyncHost {
  /** Resolves once a resync should run (bitmap mode has ended), or the agent stops. */
  turn(): Promise<void>;
  /** `undefined` while the resync may journal; else resolves once it may (back in bitmap mode, or the journal full). */
  room(): Promise<void> | undefined;
  /** Journals a RESYNC marker with the bytes still dirty, while the resync runs (not in bitmap mode). */
  progress(): void;
  /**
   * No region is dirty and every clear is durable: ends the resync (its end marker, then the mode flag
   * once that is synced) unless bitmap mode came back; whether it ended.
   */
  end(): boolean;
}

export interface ResyncOptions {
  readonly bitmap: DirtyBitmap;
  /** One per disk, in disk order. */
  readonly targets: readonly ResyncTarget[];
  readonly journal: Journal;
  readonly host: ResyncHost;
  readonly log: Logger;
  /**
   * A progress marker (and the clears it makes durable, after a journal sync) every this many bytes
   * resynced. Default 16 MiB: the processor's percentage moves at least that often, and a crash
   * resends at most that much again.
   */
  readonly markEveryBytes?: number;
  /** Regions copied at once. Default 8, as the initial copy: half of the I/O thread pool. */
  readonly parallel?: number;
  /** Spacing of retries after a failed copy (a read error, say). Default 1 s doubling to 60 s. */
  readonly retry?: BackoffOptions;
}

export const DEFAULT_RESYNC_MARK_EVERY_BYTES = 16 * 1024 * 1024;
const DEFAULT_RESYNC_PARALLEL = 8;
const DEFAULT_RESYNC_RETRY: BackoffOptions = { initialDelayMs: 1000, maxDelayMs: 60_000, jitter: 0.5 };

/**
 * Sends the regions bitmap mode marked through the ordered stream, after it: each dirty region is read
 * from the image and journaled by the capture filter (`copyRange`, as the initial copy does, so a VM
 * write racing the copy lands after it), and its bit is cleared in the file only once the journal is
 * synced past the copy. Regions marked again meanwhile (bitmap mode came back mid-resync) keep their
 * bit and are copied on a later pass. When no region is left, the host ends the resync.
 */
export class Resync {
  private stopped = false;
  private resynced = 0;
  private sinceMark = 0;
  private readonly backoff: Backoff;
  private wake: (() => void) | undefined;
  private running: Promise<void> | undefined;

  constructor(private readonly o: ResyncOptions) {
    this.backoff = new Backoff(o.retry ?? DEFAULT_RESYNC_RETRY);
  }

  /** Bytes resynced since the last resync ended. */
  get resyncedBytes(): number {
    return this.resynced;
  }

  /** Runs resyncs, one after each bitmap mode, until stopped. */
  start(): void {
    this.running ??= this.loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.running;
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      await this.o.host.turn();
      if (this.stopped) return;
      try {
        if (await this.pass()) this.resynced = 0;
        this.backoff.reset();
      } catch (err) {
        if (this.stopped) return; // cut short by the stop (a wait for journal room ends with SR_SHUTTING_DOWN)
        const delay = this.backoff.next();
        this.o.log.error(
          { err: (err as Error).message, attempts: this.backoff.attempts, retryInMs: delay },
          'resync of the dirty regions failed; it retries with the regions still marked',
        );
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, delay);
          this.wake = () => (clearTimeout(timer), resolve());
        });
        this.wake = undefined;
      }
    }
  }

  /** Copies every dirty region, as often as they are marked again; true once the resync ended. */
  private async pass(): Promise<boolean> {
    const { bitmap } = this.o;
    const parallel = this.o.parallel ?? DEFAULT_RESYNC_PARALLEL;
    let cursor = 0;
    while (!this.stopped) {
      const room = this.o.host.room();
      if (room !== undefined) {
        await room;
        continue;
      }
      const batch: number[] = [];
      for (let c = bitmap.nextDirty(cursor); c !== undefined && batch.length < parallel; c = bitmap.nextDirty(c + 1))
        batch.push(c);
      if (batch.length === 0) {
        if (cursor > 0) {
          cursor = 0; // regions marked again behind the cursor
          continue;
        }
        // Every clear durable first: once the end marker is journaled, the mode flag goes.
        await this.mark();
        return this.o.host.end();
      }
      cursor = batch[batch.length - 1]! + 1;
      await Promise.all(batch.map((c) => this.copy(c)));
      if (this.sinceMark >= (this.o.markEveryBytes ?? DEFAULT_RESYNC_MARK_EVERY_BYTES)) await this.mark();
    }
    return false;
  }

  private async copy(c: number): Promise<void> {
    const { bitmap } = this.o;
    const { disk, offset, length } = bitmap.locate(c);
    bitmap.beginCopy(c);
    let lsn: number | undefined;
    try {
      lsn = await this.o.targets[disk]!.copyRange(offset, length, true);
    } finally {
      if (bitmap.endCopy(c, lsn !== undefined)) {
        this.resynced += length;
        this.sinceMark += length;
      }
    }
  }

  /** A progress marker, then the clears of regions copied so far, once the journal holds their copies durably. */
  private async mark(): Promise<void> {
    const clears = this.o.bitmap.takeClears();
    if (this.o.bitmap.dirtyChunks > 0) this.o.host.progress();
    this.sinceMark = 0;
    await this.o.journal.sync();
    await this.o.bitmap.persistClears(clears);
  }
}
