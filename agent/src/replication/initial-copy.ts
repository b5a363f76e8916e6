import {
  Backoff,
  ErrorCode,
  RecordKind,
  SrError,
  isSrError,
  systemErrorCode,
  type BackoffOptions,
  type Logger,
} from '@site-recovery/shared';
import { BackendError } from '@site-recovery/shared/nbd';
import type { CaptureBackend, CopyRun, LsnSequence } from '../backend/capture-filter.js';
import type { Journal } from '../journal/journal.js';
import { diffRuns, wholeChunk } from './chunk-diff.js';
import type { FullCopyReason, SumsExchange, SumsStatus } from './sums-exchange.js';

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
  /**
   * Asks for the replica's block sums first, to send only the blocks that differ. Absent: every block
   * is sent (zero chunks as ZERO records), as for a replica nothing is known of.
   */
  readonly sums?: SumsExchange;
}

/** A disk read error may clear (a path failover, a remount); retrying costs little, so it never gives up. */
export const DEFAULT_INITIAL_COPY_RETRY: BackoffOptions = { initialDelayMs: 1000, maxDelayMs: 60_000, jitter: 0.5 };

export interface InitialCopyStatus {
  /**
   * `waiting-for-sums`: the replica's sums were asked for and the copy waits for them (the VM's writes
   * are journaled and shipped meanwhile; `sums` says how far the answer is); `failed`: the last attempt
   * failed and the next one waits for `failure.nextRetryAt`.
   */
  readonly state: 'waiting-for-sums' | 'copying' | 'failed' | 'done';
  /** Bytes of the disks gone through (compared or copied), the resume point. */
  readonly copiedBytes: number;
  readonly totalBytes: number;
  readonly percent: number;
  /**
   * `difference`: only blocks whose sums differ from the replica's are sent; `full`: every block
   * (zero chunks as ZERO records), see `fullCopyReason`; a copy by difference whose answer fails mid-way
   * goes on as `full` from there. Absent before the first sums arrive.
   */
  readonly method?: 'difference' | 'full';
  /** Why every block is sent: the processor has no replica to compare with, no answer came, ... */
  readonly fullCopyReason?: string;
  /** The sums request while its answer is awaited (the copy compares each chunk once its sums are here). */
  readonly sums?: SumsStatus;
  /** Since the agent started, bytes read and compared with the replica's sums (copy by difference). */
  readonly comparedBytes?: number;
  /** Of those, bytes found equal to the replica's and not sent. */
  readonly equalBytes?: number;
  /** Since the agent started, bytes the copy sent as WRITE records (their payload). */
  readonly sentBytes?: number;
  /** Since the agent started, bytes the copy sent as ZERO records (no payload: 32 bytes each on the wire). */
  readonly zeroedBytes?: number;
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
 * The initial replication of a new generation. It first asks for the replica's block sums (see
 * SumsExchange); as soon as a chunk's sums are there the chunk is read under write order
 * (CaptureBackend.copyChunkBy) and the blocks that differ from the replica go through the ordered
 * stream, interleaved with the VM's own writes, with SYNC markers recording progress in stream order.
 * Without usable sums every block goes (zero chunks as ZERO records). A failed attempt is retried with
 * backoff from where it stopped (chunks copied twice are harmless: the stream orders them before any
 * later write); after a restart the sums are asked for again and the copy resumes at the persisted point.
 */
export class InitialSync {
  private copied: number;
  private readonly total: number;
  private stopped = false;
  private complete = false;
  private chosen: 'waiting' | 'difference' | 'full' | undefined;
  private fullCopyReason: string | undefined;
  /** Whether any chunk was compared: the status then shows the comparison's counts. */
  private compared = false;
  private readonly counts = { comparedBytes: 0, equalBytes: 0, sentBytes: 0, zeroedBytes: 0 };
  private failure: InitialCopyFailure | undefined;
  private waiting = false;
  private readonly backoff: Backoff;
  private wake: (() => void) | undefined;

  constructor(private readonly o: InitialSyncOptions) {
    this.copied = o.startAt;
    this.total = o.captures.reduce((n, c) => n + c.size, 0);
    this.backoff = new Backoff(o.retry ?? DEFAULT_INITIAL_COPY_RETRY);
  }

  status(): InitialCopyStatus {
    const method = this.chosen === 'waiting' ? undefined : this.chosen;
    const sums = this.o.sums?.status();
    const { comparedBytes, equalBytes, ...sent } = this.counts;
    return {
      state: this.complete
        ? 'done'
        : this.waiting
          ? 'failed'
          : this.chosen === 'waiting'
            ? 'waiting-for-sums'
            : 'copying',
      copiedBytes: this.copied,
      totalBytes: this.total,
      percent: this.total === 0 ? 100 : Math.floor((this.copied / this.total) * 1000) / 10,
      ...(method !== undefined ? { method } : {}),
      ...(this.fullCopyReason !== undefined ? { fullCopyReason: this.fullCopyReason } : {}),
      ...(sums !== undefined ? { sums } : {}),
      ...(method === 'difference' || this.compared ? { comparedBytes, equalBytes } : {}),
      ...sent,
      ...(this.failure !== undefined ? { failure: this.failure } : {}),
    };
  }

  /** Ends the copy (and any wait for sums or a retry); it resumes at the next start from the persisted point. */
  stop(): void {
    this.stopped = true;
    this.o.sums?.stop();
    this.wake?.();
  }

  /** Copies until done or stopped, retrying failed attempts; never rejects. */
  async run(): Promise<void> {
    try {
      if (!(await this.choose())) return;
      this.o.log.info({ from: this.copied, total: this.total, method: this.chosen }, 'initial copy started');
      while (!this.stopped) {
        try {
          await this.attempt();
          if (this.stopped) return;
          this.complete = true;
          this.failure = undefined;
          this.o.log.info({ total: this.total, method: this.chosen, ...this.counts }, 'initial copy complete');
          return;
        } catch (err) {
          if (this.stopped) return; // cut short by the stop (a wait for journal room ends with SR_SHUTTING_DOWN)
          await this.failed(err);
        }
      }
    } finally {
      await this.o.sums?.close(this.complete).catch(() => undefined);
    }
  }

  /** Waits for the replica's first sums, or settles on sending every block (saying why). False once stopped. */
  private async choose(): Promise<boolean> {
    const exchange = this.o.sums;
    let outcome: 'sums' | FullCopyReason | undefined;
    const odd = exchange && this.o.captures.find((c) => c.chunkBytes % exchange.blockBytes !== 0);
    if (exchange === undefined) {
      outcome = { fullCopyReason: 'no checksum resync configured', warn: false };
    } else if (odd !== undefined) {
      const why = `the copy chunk (${odd.chunkBytes} bytes) is not a multiple of the sums block (${exchange.blockBytes})`;
      outcome = { fullCopyReason: why, warn: true };
    } else {
      this.chosen = 'waiting';
      this.o.log.info({ blockBytes: exchange.blockBytes }, "initial copy: asking for the replica's block sums");
      try {
        outcome = await exchange.start();
      } catch (err) {
        outcome = { fullCopyReason: `the sums could not be kept: ${(err as Error).message}`, warn: true };
      }
      if (outcome === undefined || this.stopped) return false;
    }
    if (outcome === 'sums') {
      this.chosen = 'difference';
      this.o.log.info(
        { blockBytes: exchange!.blockBytes },
        "initial copy by difference: only blocks whose sums differ from the replica's are sent",
      );
    } else this.sendEverything(outcome);
    return true;
  }

  /** From here on every block is sent; said once, with why. */
  private sendEverything(why: FullCopyReason): void {
    if (this.chosen === 'full') return;
    this.chosen = 'full';
    this.fullCopyReason = why.fullCopyReason;
    this.o.log[why.warn ? 'warn' : 'info'](
      { reason: why.fullCopyReason, comparedBytes: this.counts.comparedBytes },
      'initial copy of every block (zero chunks as ZERO records)',
    );
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
    for (const [disk, capture] of this.o.captures.entries()) {
      const diskEnd = base + capture.size;
      if (this.copied < diskEnd) {
        const firstChunk = Math.floor(Math.max(0, this.copied - base) / capture.chunkBytes);
        const chunks = Math.ceil(capture.size / capture.chunkBytes);
        for (let c = firstChunk; c < chunks && !this.stopped; c += parallel) {
          while (this.o.journal.stats().bytes > maxJournal && !this.stopped) await sleep(20);
          const batch = [];
          for (let k = c; k < Math.min(chunks, c + parallel); k++) batch.push(this.copyChunk(capture, disk, k));
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

  /** One chunk: its blocks that differ from the replica's, or all of it without sums. */
  private async copyChunk(capture: CaptureBackend, disk: number, chunk: number): Promise<void> {
    const exchange = this.o.sums;
    const length = Math.min(capture.chunkBytes, capture.size - chunk * capture.chunkBytes);
    let plan = wholeChunk;
    let compared = false;
    if (this.chosen === 'difference' && exchange !== undefined) {
      const block = exchange.blockBytes;
      // Waits for the sums of this chunk's blocks; read before the chunk, as the plan may not wait.
      const replica = await exchange.read(disk, (chunk * capture.chunkBytes) / block, Math.ceil(length / block));
      if (this.stopped) throw new SrError(ErrorCode.SHUTTING_DOWN, 'the initial copy is stopping');
      if (replica !== undefined) {
        plan = (data) => diffRuns(data, replica, block);
        compared = true;
      } else this.sendEverything(exchange.failed ?? { fullCopyReason: 'the sums stopped coming', warn: true });
    }
    const runs = await capture.copyChunkBy(chunk, plan);
    this.count(length, runs, compared);
  }

  private count(length: number, runs: readonly CopyRun[], compared: boolean): void {
    let sent = 0;
    for (const r of runs) {
      sent += r.length;
      if (r.zero) this.counts.zeroedBytes += r.length;
      else this.counts.sentBytes += r.length;
    }
    if (!compared) return;
    this.compared = true;
    this.counts.comparedBytes += length;
    this.counts.equalBytes += length - sent;
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
