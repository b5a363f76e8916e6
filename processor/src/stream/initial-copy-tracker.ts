import { RecordKind, type ChangeRecord, type Progress } from '@site-recovery/shared';
import type { InitialSync } from '../replica/replica-store.js';

/**
 * Follows the initial copy of a generation as `progress` rides on its batches. Progress counts only
 * once the batch that carried it is applied (for display) or durable (for the persisted flag), so
 * the tracker keeps each report with the LSN of the batch's last record until that LSN is reached.
 */
export class InitialSyncTracker {
  private base: InitialSync;
  private marks: { readonly lsn: number; readonly progress: Progress }[] = [];
  private lastNoted = 0;

  constructor(start: InitialSync) {
    this.base = start;
  }

  /**
   * Records progress that holds once record `lsn` is applied. Reports must come in stream order; one
   * at or below an earlier report (a batch sent again) adds nothing and is ignored.
   */
  note(lsn: number, progress: Progress): void {
    if (this.base.state !== 'copying' || lsn <= this.lastNoted) return;
    this.marks.push({ lsn, progress });
    this.lastNoted = lsn;
  }

  /** Where the copy stands once every record up to `lsn` is applied. */
  at(lsn: number): InitialSync {
    let s = this.base;
    for (const m of this.marks) {
      if (m.lsn > lsn) break;
      s = advance(s, m.progress);
    }
    return s;
  }

  /** Makes `at(lsn)` the new base: the position through `lsn` has been persisted. */
  settle(lsn: number): void {
    this.base = this.at(lsn);
    this.marks = this.base.state === 'copying' ? this.marks.filter((m) => m.lsn > lsn) : [];
  }

  /** Starts over from a persisted state (a reopened replica, or a new generation at `COPYING`). */
  resetTo(start: InitialSync): void {
    this.base = start;
    this.marks = [];
    this.lastNoted = 0;
  }

  /** Drops reports of records that will be sent again (after a rewind to `lsn`). */
  forgetAfter(lsn: number): void {
    this.marks = this.marks.filter((m) => m.lsn <= lsn);
    this.lastNoted = Math.min(this.lastNoted, lsn);
  }
}

export function sameSync(a: InitialSync, b: InitialSync): boolean {
  return a.state === b.state && a.done === b.done && a.total === b.total;
}

function advance(s: InitialSync, p: Progress): InitialSync {
  if (s.state !== 'copying') return s;
  return { state: p.done >= p.total ? 'done' : 'copying', done: p.done, total: p.total };
}

/** Percentage for display, one decimal; a finished copy is 100 whatever it reported. */
export function syncPercent(s: InitialSync): number {
  if (s.state === 'done') return 100;
  if (s.total <= 0) return 0;
  return Math.min(100, Math.floor((s.done * 1000) / s.total) / 10);
}

/**
 * The record a batch's `progress` belongs to: its last SYNC marker (the agent reports the marker's
 * count), or else the batch's last record.
 */
export function progressLsn(records: readonly ChangeRecord[]): number {
  for (let i = records.length - 1; i >= 0; i--) if (records[i]!.kind === RecordKind.SYNC) return records[i]!.lsn;
  return records[records.length - 1]!.lsn;
}
