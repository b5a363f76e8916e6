import {
  Backoff,
  ErrorCode,
  RecordKind,
  isSrError,
  systemErrorCode,
  type BackoffOptions,
  type Logger,
} from '@site-recovery/shared';
import { BackendError } from '@site-recovery/shared/nbd';
import type { CaptureBackend, LsnSequence } from '../backend/capture-filter.js';
import type { Journal } from '../journal/journal.js';

interface InitialSyncOptions {
  readonly captures: readonly CaptureBackend[];
  readonly lsns: LsnSequence;
  readonly journal: Journal;
  /** Bytes already copied (resume point), in disk order. */
  readonly startAt: number;
  /** Called after each progress marker is journaled, to persist the resume point. */
  readonly onProgress: (copiedBytes: number, complete: boolean) => Promise<void>;
  readonly log: Logger;
  /** A progress marker is journaled every this many bytes. Default 64 MiB. */
  readonly markEveryBytes?: number;
  /** The copy pauses while the journal holds more than this (it waits for shipping). Default 512 MiB. */
  readonly maxJournalBytes?: number;
  /** Chunks read at once. Default 8: half of the I/O thread pool, so the VM's own large writes still find threads. */
  readonly parallel?: number;
  /** Spacing of retries after a failed attempt. Default {@link DEFAULT_INITIAL_COPY_RETRY}. */
  readonly retry?: BackoffOptions;
}

/** A disk read error may clear (a path failover, a remount); retrying costs little, so it never gives up. */
export const DEFAULT_INITIAL_COPY_RETRY: BackoffOptions = { initialDelayMs: 1000, maxDelayMs: 60_000, jitter: 0.5 };

export interface InitialCopyStatus {
  /** `failed`: the last attempt failed and the next one waits for `failure.nextRetryAt`. */
  readonly state: 'copying' | 'failed' | 'done';
  readonly copiedBytes: number;
  readonly totalBytes: number;
  readonly percent: number;
  /** From a failed attempt until a later attempt copies something again. */
  readonly failure?: InitialCopyFailure;
}

export interface InitialCopyFailure {
  /** Stable code: an SR_ code, or the system's (EIO, ENOSPC, ...). */
  readonly code: string;
  readonly message: string;
  /** Attempts that failed in a row. */
  readonly attempts: number;
  readonly at: string;
  /** When the next attempt starts; absent while it runs. */
  readonly nextRetryAt?: string;
}

/**
 * The initial replication of a new generation: every non-zero chunk of every disk goes through the
 * ordered stream (CaptureBackend.copyChunk), interleaved with the VM's own writes, with SYNC
 * markers recording progress in stream order. A failed attempt is retried with backoff from where
 * it stopped (chunks copied twice are harmless: the stream orders them before any later write).
 */
export class InitialSync {
  private copied: number;
  private readonly total: number;
  private stopped = false;
  private sentBytes = 0;
  private complete = false;
  private failure: InitialCopyFailure | undefined;
  private waiting = false;
  private readonly backoff: Backoff;
  private wake: (() => void) | undefined;

  constructor(private readonly o: InitialSyncOptions) {
    this.copied = o.startAt;
    this.total = o.captures.reduce((n, c) => n + c.size, 0);
    this.backoff = new Backoff(o.retry ?? DEFAULT_INITIAL_COPY_RETRY);
  }

  progress(): { copiedBytes: number; totalBytes: number; sentBytes: number; percent: number } {
    return {
      copiedBytes: this.copied,
      totalBytes: this.total,
      sentBytes: this.sentBytes,
      percent: this.total === 0 ? 100 : Math.floor((this.copied / this.total) * 1000) / 10,
    };
  }

  status(): InitialCopyStatus {
    const p = this.progress();
    return {
      state: this.complete ? 'done' : this.waiting ? 'failed' : 'copying',
      copiedBytes: p.copiedBytes,
      totalBytes: p.totalBytes,
      percent: p.percent,
      ...(this.failure !== undefined ? { failure: this.failure } : {}),
    };
  }

  /** Ends the copy (and any wait for a retry); it resumes at the next start from the persisted point. */
  stop(): void {
    this.stopped = true;
    this.wake?.();
  }

  /** Copies until done or stopped, retrying failed attempts; never rejects. */
  async run(): Promise<void> {
    this.o.log.info({ from: this.copied, total: this.total }, 'initial copy started');
    while (!this.stopped) {
      try {
        await this.attempt();
        if (this.stopped) return;
        this.complete = true;
        this.failure = undefined;
        this.o.log.info({ total: this.total, sent: this.sentBytes }, 'initial copy complete');
        return;
      } catch (err) {
        if (this.stopped) return; // cut short by the stop (a wait for journal room ends with SR_SHUTTING_DOWN)
        await this.failed(err);
      }
    }
  }

  private async failed(err: unknown): Promise<void> {
    const delay = this.backoff.next();
    const at = Date.now();
    this.failure = {
      code: codeOf(err),
      message: (err as Error).message,
      attempts: this.backoff.attempts,
      at: new Date(at).toISOString(),
      nextRetryAt: new Date(at + delay).toISOString(),
    };
    this.o.log.error(
      { err: this.failure.message, code: this.failure.code, attempts: this.failure.attempts, retryInMs: delay },
      'initial copy failed; it retries from where it stopped',
    );
    this.waiting = true;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, delay);
      this.wake = () => (clearTimeout(timer), resolve());
    });
    this.wake = undefined;
    this.waiting = false;
    const f = this.failure;
    if (f !== undefined) this.failure = { code: f.code, message: f.message, attempts: f.attempts, at: f.at };
  }

  /** Something was copied since the last failure: the source reads again, so the failure is over. */
  private madeProgress(): void {
    if (this.failure === undefined) return;
    this.o.log.info({ attempts: this.failure.attempts }, 'initial copy recovered');
    this.failure = undefined;
    this.backoff.reset();
  }

  private async attempt(): Promise<void> {
    const markEvery = this.o.markEveryBytes ?? 64 * 1024 * 1024;
    const maxJournal = this.o.maxJournalBytes ?? 512 * 1024 * 1024;
    const parallel = this.o.parallel ?? 8;
    let base = 0;
    let nextMark = this.copied + markEvery;
    for (const capture of this.o.captures) {
      const diskEnd = base + capture.size;
      if (this.copied < diskEnd) {
        const firstChunk = Math.floor(Math.max(0, this.copied - base) / capture.chunkBytes);
        const chunks = Math.ceil(capture.size / capture.chunkBytes);
        for (let c = firstChunk; c < chunks && !this.stopped; c += parallel) {
          while (this.o.journal.stats().bytes > maxJournal && !this.stopped) await sleep(20);
          const batch = [];
          for (let k = c; k < Math.min(chunks, c + parallel); k++)
            batch.push(capture.copyChunk(k).then((sent) => sent && (this.sentBytes += capture.chunkBytes)));
          await Promise.all(batch);
          this.copied = Math.min(diskEnd, base + (c + parallel) * capture.chunkBytes);
          this.madeProgress();
          if (this.copied >= nextMark && this.copied < this.total) {
            await this.mark(false);
            nextMark = this.copied + markEvery;
          }
        }
      }
      if (this.stopped) return;
      base = diskEnd;
    }
    this.copied = this.total;
    await this.mark(true);
  }

  private async mark(complete: boolean): Promise<void> {
    const room = this.o.journal.room();
    if (room !== undefined) await room;
    const lsn = this.o.lsns.next();
    await this.o.journal.append({
      lsn,
      kind: RecordKind.SYNC,
      disk: 0,
      offset: this.copied,
      length: 0,
      time: Date.now(),
    });
    await this.o.journal.sync(); // the resume point must never run ahead of durable records
    await this.o.onProgress(this.copied, complete);
  }
}

function codeOf(err: unknown): string {
  if (isSrError(err)) return err.code;
  const system = systemErrorCode(err);
  if (system !== undefined) return system;
  return err instanceof BackendError ? ErrorCode.IO : ErrorCode.INTERNAL;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
