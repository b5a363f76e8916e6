import { ErrorCode, isSrError, type ChangeRecord } from '@site-recovery/shared';
import type { FileJournal } from '../journal/file-journal.js';
import type { Journal, JournalCursor, JournalStats } from '../journal/journal.js';

export interface AgentJournalEvents {
  /** A record read back failed validation (or is gone): the journal can no longer be streamed from. */
  readonly onDamage: (err: Error) => void;
  /** The journal failed (an append or a sync): it takes no more writes until it is replaced. */
  readonly onFailure: (err: Error) => void;
}

/**
 * The VM's journal across generations: everyone (capture, group, checkpointer, replication) holds this
 * one object, and a new generation begun at run time swaps the file journal behind it in one step
 * ({@link swap}). It also reports damage and failure as they are met, and can let writers past the cap
 * while a generation is cut ({@link openCap}).
 */
export class AgentJournal implements Journal {
  private stopped = false;
  /** Writers waiting for room, each released early by {@link openCap}. */
  private readonly waiting = new Set<() => void>();
  private capOpen: (() => void) | undefined;
  /** The batch promise last seen from `append`: a failure is watched once per batch, not per record. */
  private lastBatch: Promise<void> | undefined;

  constructor(
    private inner: FileJournal,
    private readonly events: AgentJournalEvents,
  ) {}

  /** The file journal now behind this one. */
  get current(): FileJournal {
    return this.inner;
  }

  /**
   * Puts `next` behind this journal and returns the one it replaces (the caller closes it). Only with
   * nothing appending and no cursor open: it is the cut between two generations.
   */
  swap(next: FileJournal): FileJournal {
    const old = this.inner;
    this.inner = next;
    this.lastBatch = undefined;
    if (this.stopped) next.stopWaiting();
    return old;
  }

  /**
   * While a generation is cut, writers must not wait for room: the stream that would make room is
   * being stopped. Every writer waiting now goes on, and until {@link closeCap} none waits (the journal
   * may pass its cap by what is in flight); `onFull` is told whenever one would have waited, so the
   * caller can pause the VM's writes instead.
   */
  openCap(onFull: () => void): void {
    this.capOpen = onFull;
    if (this.waiting.size === 0) return;
    onFull();
    for (const go of [...this.waiting]) go();
    this.waiting.clear();
  }

  closeCap(): void {
    this.capOpen = undefined;
  }

  cursor(from: number): JournalCursor {
    const c = this.inner.cursor(from);
    return {
      next: (maxBytes) =>
        c.next(maxBytes).catch((err: unknown) => {
          if (isSrError(err, ErrorCode.JOURNAL_CORRUPT)) this.events.onDamage(err);
          throw err;
        }),
      close: () => c.close(),
    };
  }

  releaseThrough(lsn: number): Promise<void> {
    return this.inner.releaseThrough(lsn);
  }

  /** At the cap, unless a new generation's cut lets writers past it (see `room`). */
  get atCap(): boolean {
    return this.capOpen === undefined && this.inner.atCap;
  }

  room(): Promise<void> | undefined {
    if (this.capOpen !== undefined) {
      const s = this.inner.stats();
      if (s.bytes >= s.maxBytes) this.capOpen();
      return undefined;
    }
    const full = this.inner.room();
    if (full === undefined) return undefined;
    return new Promise<void>((resolve, reject) => {
      const go = (): void => {
        this.waiting.delete(go);
        resolve();
      };
      this.waiting.add(go);
      full.then(go, (err: Error) => {
        this.waiting.delete(go);
        reject(err);
      });
    });
  }

  stopWaiting(): void {
    this.stopped = true;
    this.inner.stopWaiting();
  }

  get lastLsn(): number {
    return this.inner.lastLsn;
  }

  get firstLsn(): number {
    return this.inner.firstLsn;
  }

  append(record: ChangeRecord): Promise<void> {
    const inner = this.inner;
    const done = inner.append(record);
    if (done !== this.lastBatch) {
      this.lastBatch = done;
      done.catch((err: unknown) => this.failed(inner, err));
    }
    return done;
  }

  sync(): Promise<void> {
    const inner = this.inner;
    const done = inner.sync();
    done.catch((err: unknown) => this.failed(inner, err));
    return done;
  }

  read(from: number): AsyncIterable<ChangeRecord> {
    return this.inner.read(from);
  }

  stats(): JournalStats {
    return this.inner.stats();
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  /** A failure of the journal now in use, not a refusal at shutdown nor one of a journal already let go. */
  private failed(from: FileJournal, err: unknown): void {
    if (from !== this.inner || this.stopped || isSrError(err, ErrorCode.SHUTTING_DOWN)) return;
    if (from.stats().failed === undefined) return; // a refused append (a bug), not a failed journal
    this.events.onFailure(err instanceof Error ? err : new Error(String(err)));
  }
}
