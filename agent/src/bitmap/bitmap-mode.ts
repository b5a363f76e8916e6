import { ErrorCode, RecordKind, SrError, type Logger } from '@site-recovery/shared';
import type { LsnSequence } from '../backend/capture-filter.js';
import type { Journal } from '../journal/journal.js';
import type { DirtyBitmap } from './dirty-bitmap.js';
import { Resync, type ResyncOptions, type ResyncTarget } from './resync.js';

/** How the VM's writes reach the replica now. */
export type ReplicationMode = 'streaming' | 'bitmap' | 'resyncing';

export interface BitmapModeOptions {
  readonly journal: Journal;
  readonly lsns: LsnSequence;
  readonly bitmap: DirtyBitmap;
  readonly log: Logger;
  /**
   * Bitmap mode ends, and the resync starts, once the journal holds at most this many bytes; the
   * resync also keeps the journal at or below it, leaving the rest of the cap to the VM's writes.
   * Default half the journal's cap: the cache-store has taken half of what piled up, so it keeps up,
   * and the VM has room to write a half cap's worth before bitmap mode would come back.
   */
  readonly resumeBelowBytes?: number;
  /** How often bitmap mode looks whether the journal has drained. Default 100 ms. */
  readonly pollMs?: number;
  /** Told when bitmap mode begins, with why (a held group round is aborted). */
  readonly onEnter?: (reason: string) => void;
  readonly resync?: Pick<ResyncOptions, 'markEveryBytes' | 'parallel' | 'retry'>;
}

/** The `mode` section of the agent's status. */
export interface ModeStatus {
  readonly state: ReplicationMode;
  /** When the VM entered this state (ISO). */
  readonly since: string;
  /** Bytes of the disks marked dirty and not yet resynced. */
  readonly dirtyBytes: number;
  /** Bytes of disk per bit of the bitmap. */
  readonly chunkBytes: number;
  /** Times bitmap mode began since the agent started. */
  readonly entered: number;
  /** From the LSN of the marker that began it (the first bitmap mode) until the resync ends. */
  readonly resync?: {
    readonly startLsn: number;
    readonly resyncedBytes: number;
    readonly totalBytes: number;
    readonly percent: number;
  };
  readonly lastResync?: { readonly startLsn: number; readonly endLsn: number; readonly endedAt: string };
  /** Why the bitmap loaded at start was not trusted (every region was marked dirty). */
  readonly untrusted?: string;
}

const DEFAULT_POLL_MS = 100;

/**
 * The VM's replication mode. `streaming`: every write takes an LSN and is journaled. When a write finds
 * the journal at its cap the VM goes to `bitmap`: a RESYNC marker tells the stream that from here the
 * replica is not a state of the source, and writes take no LSN (a generation's LSNs stay gapless):
 * each marks its regions in the dirty bitmap and goes to the image, so none waits for the link.
 * Once the journal has drained to `resumeBelowBytes`, `resyncing`: writes are journaled again and
 * the dirty regions follow them through the stream; a journal full again goes back to `bitmap`
 * (regions not yet resynced keep their bits). A RESYNC marker of 0 bytes ends it: `streaming`.
 */
export class BitmapMode {
  private current: ReplicationMode = 'streaming';
  private since = Date.now();
  private entered = 0;
  private episodeStart: number | undefined;
  private last: ModeStatus['lastResync'];
  private timer: NodeJS.Timeout | undefined;
  /** Woken at every change of state, and when the mode stops. */
  private changeWaiters: (() => void)[] = [];
  private stopped = false;
  private resyncer: Resync | undefined;
  private readonly resumeBelow: number;
  private readonly untrusted: string | undefined;

  constructor(private readonly o: BitmapModeOptions) {
    this.resumeBelow = o.resumeBelowBytes ?? Math.floor(o.journal.stats().maxBytes / 2);
    this.untrusted = o.bitmap.untrusted;
  }

  get state(): ReplicationMode {
    return this.current;
  }

  /**
   * Takes up what the data dir's bitmap says, before the VM can write: regions still dirty put the VM
   * back in bitmap mode; a mode flag without them (the agent stopped between clearing the last bit and
   * journaling the resync's end) ends the resync now. Either way a RESYNC marker goes first, so the
   * stream says so even if the one before the restart was lost.
   */
  resume(): void {
    const flag = this.o.bitmap.flag;
    if (flag === undefined && this.o.bitmap.dirtyChunks === 0) return;
    const lsn = this.marker(this.o.bitmap.dirtyBytes);
    const startLsn = flag !== undefined && flag.startLsn > 0 ? flag.startLsn : lsn;
    if (this.o.bitmap.dirtyChunks === 0) {
      this.ended(startLsn, lsn);
      return;
    }
    this.moveTo('bitmap');
    if (flag !== undefined) this.since = Date.parse(flag.since) || this.since;
    this.episodeStart = startLsn;
    this.o.bitmap.activate({ generation: this.o.bitmap.geometry.generation, since: iso(this.since), startLsn });
    this.o.log.warn(
      { dirtyBytes: this.o.bitmap.dirtyBytes, since: iso(this.since), lsn },
      'bitmap mode continues after the restart: the dirty regions are resynced once the journal has drained',
    );
    this.poll();
  }

  /** Starts the resync runner over the disks' capture filters (in disk order). */
  start(targets: readonly ResyncTarget[]): void {
    this.resyncer = new Resync({
      bitmap: this.o.bitmap,
      targets,
      journal: this.o.journal,
      log: this.o.log,
      ...this.o.resync,
      host: {
        turn: () => this.turn(),
        room: () => this.resyncRoom(),
        progress: () => void this.marker(this.o.bitmap.dirtyBytes),
        end: () => this.end(),
      },
    });
    this.resyncer.start();
  }

  /**
   * One write-type request of disk `disk`, at the capture point. `undefined`: journal it as usual.
   * Otherwise the write is tracked in the bitmap instead and must not reach the image before the
   * promise resolves (its regions durably marked; at once when they were already).
   */
  track(disk: number, offset: number, length: number): Promise<void> | undefined {
    if (this.current !== 'bitmap') {
      if (!this.o.journal.atCap) return undefined;
      const marked = this.o.bitmap.mark(disk, offset, length);
      this.enter();
      return marked ?? DURABLE;
    }
    return this.o.bitmap.mark(disk, offset, length) ?? DURABLE;
  }

  /** `undefined` unless in bitmap mode, where nothing but its markers is journaled: resolves when it ends. */
  whenJournaling(): Promise<void> | undefined {
    if (this.current !== 'bitmap') return undefined;
    if (this.stopped)
      return Promise.reject(new SrError(ErrorCode.SHUTTING_DOWN, 'the agent is stopping in bitmap mode'));
    return this.changed();
  }

  /** Why the VM cannot be cut for a recovery point now (bitmap mode or resync), or `undefined`. */
  refusal(): string | undefined {
    if (this.current === 'streaming') return undefined;
    const s = this.status();
    return this.current === 'bitmap'
      ? `the VM is in bitmap mode since ${s.since} (${s.dirtyBytes} bytes dirty): the replica lacks its writes until they are resynced`
      : `the VM is resyncing its dirty regions (${s.resync?.percent ?? 0}%, ${s.dirtyBytes} bytes left)`;
  }

  status(): ModeStatus {
    const dirty = this.o.bitmap.dirtyBytes;
    const resynced = this.resyncer?.resyncedBytes ?? 0;
    const total = resynced + dirty;
    return {
      state: this.current,
      since: iso(this.since),
      dirtyBytes: dirty,
      chunkBytes: this.o.bitmap.chunkBytes,
      entered: this.entered,
      ...(this.episodeStart !== undefined
        ? {
            resync: {
              startLsn: this.episodeStart,
              resyncedBytes: resynced,
              totalBytes: total,
              percent: total === 0 ? 100 : Math.floor((resynced / total) * 1000) / 10,
            },
          }
        : {}),
      ...(this.last !== undefined ? { lastResync: this.last } : {}),
      ...(this.untrusted !== undefined ? { untrusted: this.untrusted } : {}),
    };
  }

  /** Stops the resync and the polling; the bitmap keeps what is still dirty for the next start. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    this.wakeWaiters();
    await this.resyncer?.stop();
  }

  private enter(): void {
    const first = this.episodeStart === undefined;
    this.moveTo('bitmap');
    this.entered++;
    const lsn = this.marker(this.o.bitmap.dirtyBytes);
    this.episodeStart ??= lsn;
    this.o.bitmap.activate({
      generation: this.o.bitmap.geometry.generation,
      since: iso(this.since),
      startLsn: this.episodeStart,
    });
    const j = this.o.journal.stats();
    const reason = `the journal reached its cap of ${j.maxBytes} bytes`;
    this.o.log.warn(
      { lsn, journalBytes: j.bytes, resumeBelowBytes: this.resumeBelow, resyncing: !first },
      `${reason}: bitmap mode, VM writes are tracked in the dirty bitmap instead of waiting for the cache-store`,
    );
    this.o.onEnter?.(`${reason}: bitmap mode`);
    this.poll();
  }

  private poll(): void {
    clearInterval(this.timer);
    this.timer = setInterval(() => {
      if (this.current !== 'bitmap') return clearInterval(this.timer);
      if (this.o.journal.stats().bytes <= this.resumeBelow) this.leave();
    }, this.o.pollMs ?? DEFAULT_POLL_MS);
    this.timer.unref();
  }

  /** The journal has drained: writes are journaled again and the resync starts (in this tick). */
  private leave(): void {
    clearInterval(this.timer);
    const bitmapMs = Date.now() - this.since;
    this.moveTo('resyncing');
    const lsn = this.marker(this.o.bitmap.dirtyBytes);
    this.o.log.info(
      { lsn, dirtyBytes: this.o.bitmap.dirtyBytes, bitmapMs },
      'the journal has drained: bitmap mode ends and the dirty regions are resynced',
    );
  }

  private moveTo(state: ReplicationMode): void {
    this.current = state;
    this.since = Date.now();
    this.wakeWaiters();
  }

  private changed(): Promise<void> {
    return new Promise((resolve) => this.changeWaiters.push(resolve));
  }

  private wakeWaiters(): void {
    const waiters = this.changeWaiters;
    this.changeWaiters = [];
    for (const w of waiters) w();
  }

  private async turn(): Promise<void> {
    while (this.current !== 'resyncing' && !this.stopped) await this.changed();
  }

  private resyncRoom(): Promise<void> | undefined {
    if (this.stopped) return undefined;
    if (this.current === 'bitmap') return this.whenJournaling();
    if (this.o.journal.stats().bytes <= this.resumeBelow) return undefined;
    return new Promise((resolve) => setTimeout(resolve, this.o.pollMs ?? DEFAULT_POLL_MS));
  }

  private end(): boolean {
    if (this.current !== 'resyncing' || this.o.bitmap.dirtyChunks > 0) return false;
    const lsn = this.marker(0);
    this.ended(this.episodeStart ?? lsn, lsn);
    return true;
  }

  /** The resync ended at `endLsn`: streaming, and the mode flag goes once the end marker is durable. */
  private ended(startLsn: number, endLsn: number): void {
    this.moveTo('streaming');
    this.episodeStart = undefined;
    this.last = { startLsn, endLsn, endedAt: iso(this.since) };
    this.o.log.info({ startLsn, endLsn }, 'resync of the dirty regions complete: ordered streaming again');
    void this.o.journal
      .sync()
      .then(() => this.o.bitmap.deactivate())
      .catch((err: Error) => this.o.log.warn({ err: err.message }, 'the bitmap mode flag could not be removed yet'));
  }

  /** Journals a RESYNC marker saying `dirtyBytes` are still to resync (0: the resync ends); its LSN. */
  private marker(dirtyBytes: number): number {
    const lsn = this.o.lsns.next();
    this.o.journal
      .append({ lsn, kind: RecordKind.RESYNC, disk: 0, offset: dirtyBytes, length: 0, time: Date.now() })
      .catch((err: Error) => this.o.log.error({ lsn, err: err.message }, 'a resync marker could not be journaled'));
    return lsn;
  }
}

/** A write whose regions were marked before: it goes to the image at once. */
const DURABLE: Promise<void> = Promise.resolve();

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
