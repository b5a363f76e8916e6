import { RecordKind, type Logger } from '@site-recovery/shared';
import type { CaptureBackend, LsnSequence } from '../backend/capture-filter.js';
import type { Journal } from '../journal/journal.js';

export interface InitialSyncOptions {
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
}

/**
 * The initial replication of a new generation: every non-zero chunk of every disk goes through the
 * ordered stream (CaptureBackend.copyChunk), interleaved with the VM's own writes, with SYNC
 * markers recording progress in stream order.
 */
export class InitialSync {
  private copied: number;
  private readonly total: number;
  private stopped = false;
  private sentBytes = 0;

  constructor(private readonly o: InitialSyncOptions) {
    this.copied = o.startAt;
    this.total = o.captures.reduce((n, c) => n + c.size, 0);
  }

  progress(): { copiedBytes: number; totalBytes: number; sentBytes: number; percent: number } {
    return {
      copiedBytes: this.copied,
      totalBytes: this.total,
      sentBytes: this.sentBytes,
      percent: this.total === 0 ? 100 : Math.floor((this.copied / this.total) * 1000) / 10,
    };
  }

  stop(): void {
    this.stopped = true;
  }

  async run(): Promise<void> {
    const markEvery = this.o.markEveryBytes ?? 64 * 1024 * 1024;
    const maxJournal = this.o.maxJournalBytes ?? 512 * 1024 * 1024;
    const parallel = this.o.parallel ?? 8;
    this.o.log.info({ from: this.copied, total: this.total }, 'initial copy started');
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
    this.o.log.info({ total: this.total, sent: this.sentBytes }, 'initial copy complete');
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

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
