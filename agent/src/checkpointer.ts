import { ErrorCode, SrError, type Logger } from '@site-recovery/shared';
import { writeCheckpoint } from './agent-state.js';
import type { CaptureBackend, LsnSequence } from './backend/capture-filter.js';
import type { DiskStamp } from './generation/disk-identity.js';
import type { Journal } from './journal/journal.js';

/** How often an agent without a backlog looks at its journal's size: at 1 GB/s, a small part of the half cap left. */
const JOURNAL_WATCH_MS = 1000;

export interface CheckpointerOptions {
  readonly dataDir: string;
  readonly journal: Journal;
  readonly captures: readonly CaptureBackend[];
  readonly lsns: LsnSequence;
  /** The checkpoint the agent started from (redo wrote it). */
  readonly startLsn: number;
  readonly intervalMs: number;
  /**
   * No generation will ever ask for the journal's backlog (see AgentConfig.replication): past half
   * its cap the journal goes down to the checkpoint, and nothing else releases it.
   */
  readonly keepsNoBacklog: boolean;
  /**
   * How each image looks now; the last checkpoint of a clean stop records it, so that the next start
   * sees a write made while the agent was stopped (generation/disk-identity.ts). Default none.
   */
  readonly stamps?: () => Promise<readonly DiskStamp[]>;
  readonly log: Logger;
}

/**
 * The redo start point (`checkpoint.json`): the highest LSN through which the journal and every image
 * are on stable storage, advanced every interval and early when the journal passes half its cap. It
 * also releases journal segments, which may go only below it (and, when replicating, below what the
 * cache-store acknowledged).
 */
export class Checkpointer {
  private checkpointLsn: number;
  private ackedLsn = 0;
  private running: Promise<number> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private journalWatch: NodeJS.Timeout | undefined;
  private toldReleased = false;
  private closed = false;
  /** A new generation is being cut: no checkpoint may name an LSN of the old one after the cut. */
  private paused = false;
  private keepsNone: boolean;

  constructor(private readonly o: CheckpointerOptions) {
    this.checkpointLsn = o.startLsn;
    this.keepsNone = o.keepsNoBacklog;
  }

  get lsn(): number {
    return this.checkpointLsn;
  }

  /** See {@link CheckpointerOptions.keepsNoBacklog}. */
  get keepsNoBacklog(): boolean {
    return this.keepsNone;
  }

  start(): void {
    this.timer = setInterval(() => this.request(), this.o.intervalMs);
    this.timer.unref();
    // Nothing acknowledges segments without a backlog to keep, so the journal's size itself asks for
    // the early checkpoint.
    this.journalWatch = setInterval(() => {
      if (this.keepsNone && this.overHalfCap()) this.request();
    }, JOURNAL_WATCH_MS);
    this.journalWatch.unref();
  }

  /**
   * Stops taking checkpoints for a generation's cut and resolves once the one running (if any) is
   * done; {@link resume} goes on from the new generation's start.
   */
  async pause(): Promise<void> {
    this.paused = true;
    await this.running?.catch(() => undefined);
  }

  /**
   * Takes checkpoints again. After a cut, `from` says where: the new journal starts after `lsn` (0),
   * whose checkpoint the caller wrote, nothing of it is acknowledged yet, and `keepsNoBacklog` is as
   * in the options for the new state. Without `from` (a cut that did not happen) it goes on as it was.
   */
  resume(from?: { readonly lsn: number; readonly keepsNoBacklog: boolean }): void {
    if (from !== undefined) {
      this.checkpointLsn = from.lsn;
      this.ackedLsn = 0;
      this.keepsNone = from.keepsNoBacklog;
      this.toldReleased = false;
    }
    this.paused = false;
  }

  /** The cache-store made the stream durable through `lsn`. */
  acked(lsn: number): void {
    if (this.paused) return;
    this.ackedLsn = lsn;
    void this.release();
    if (this.overHalfCap() && lsn > this.checkpointLsn) this.request();
  }

  /**
   * Starts a checkpoint, or one more after the one running: an acknowledgement that arrives while a
   * checkpoint runs may be the last for a while (nothing new is journaled in bitmap mode), and the
   * running one may have taken its floor before it. Failures are logged.
   */
  request(): void {
    if (this.closed) return;
    if (this.running !== undefined) {
      // The one running took its floor before this request's reason (an acknowledgement, say) came:
      // another follows it, or the journal could stay full with nothing left to ask again.
      this.again = true;
      return;
    }
    this.checkpoint().catch((err: unknown) => this.o.log.error({ err: (err as Error).message }, 'checkpoint failed'));
  }

  private again = false;

  /**
   * Takes a checkpoint now, or joins the one running; resolves to the LSN the checkpoint stands at.
   * Rejects when an image or the journal cannot be synced: the checkpoint then stays where it was.
   */
  checkpoint(): Promise<number> {
    this.running ??= this.advance().finally(() => {
      this.running = undefined;
      if (!this.again) return;
      this.again = false;
      this.request();
    });
    return this.running;
  }

  private async advance(): Promise<number> {
    if (this.paused) return this.checkpointLsn;
    const floor = this.floor(this.o.lsns.current);
    if (floor <= this.checkpointLsn) return this.checkpointLsn;
    await this.o.journal.sync();
    await Promise.all(this.o.captures.map((c) => c.syncImage()));
    await writeCheckpoint(this.o.dataDir, floor);
    this.checkpointLsn = floor;
    await this.release();
    return floor;
  }

  /**
   * Highest LSN below which every write has reached its image, and below the first LSN an image
   * failed (a failed write, or a failed fdatasync that may have lost what was written before it).
   */
  private floor(upTo: number): number {
    return Math.min(upTo, ...this.o.captures.map((c) => c.oldestPending() - 1));
  }

  /**
   * The last checkpoint, once every write has reached its image: through the journal's end, unless an
   * image failed, so that the next start replays what that image may lack. Rejects (SR_IO) when the
   * journal or an image cannot be synced; the checkpoint then stays where it was for the same reason.
   */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    clearInterval(this.journalWatch);
    await this.running?.catch(() => undefined);
    const synced = await Promise.allSettled([this.o.journal.sync(), ...this.o.captures.map((c) => c.syncImage())]);
    const failed = synced.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) {
      throw new SrError(
        ErrorCode.IO,
        `the last checkpoint could not be written (${(failed.reason as Error).message}); it stays at LSN ${this.checkpointLsn} ` +
          `and the next start replays the journal from there`,
        { cause: failed.reason },
      );
    }
    const floor = this.floor(this.o.journal.lastLsn);
    const stamps = await this.o.stamps?.().catch((err: unknown) => {
      this.o.log.warn(
        { err: (err as Error).message },
        'cannot stat the images, so the next start cannot tell whether they were written while the agent was stopped',
      );
      return undefined;
    });
    await writeCheckpoint(this.o.dataDir, Math.max(floor, this.checkpointLsn), stamps);
    this.checkpointLsn = Math.max(floor, this.checkpointLsn);
  }

  /** Past half its cap, the journal of an agent without a backlog goes down to its checkpoint. */
  private overHalfCap(): boolean {
    const j = this.o.journal.stats();
    return j.bytes >= j.maxBytes / 2;
  }

  /**
   * Journal segments can go once the images hold their writes and the cache-store holds them, or no
   * cache-store will ever ask for them.
   */
  private async release(): Promise<void> {
    if (this.paused) return;
    const through = !this.keepsNone
      ? Math.min(this.ackedLsn, this.checkpointLsn)
      : this.overHalfCap()
        ? this.checkpointLsn
        : 0;
    try {
      await this.o.journal.releaseThrough(through);
      const first = this.o.journal.stats().firstLsn;
      if (first > 1 && this.keepsNone && !this.toldReleased) {
        this.toldReleased = true;
        this.o.log.info(
          { firstLsn: first },
          `the journal passed half its cap and no longer reaches back to the starting images: sr-journal replay now needs images as of LSN ${first - 1}`,
        );
      }
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, 'releasing journal segments failed');
    }
  }
}
