import { RecordKind, type ChangeRecord, type Progress } from '@site-recovery/shared';
import type { InitialSync } from '../replica/replica-store.js';

/** One report, at the LSN of the record it belongs to: initial-copy progress, or a RESYNC marker's bytes left. */
type Mark =
  { readonly lsn: number; readonly progress: Progress } | { readonly lsn: number; readonly resyncLeft: number };

/**
 * Follows the initial copy of a generation as `progress` rides on its batches, and bitmap resyncs
 * within it as their RESYNC markers arrive. A report counts only once the record it belongs to is
 * applied (for display and for cutting points) or durable (for the persisted state), so the tracker
 * keeps each with its LSN until that LSN is reached.
 */
export class InitialSyncTracker {
  private base: InitialSync;
  private marks: Mark[] = [];
  private lastProgress = 0;
  private lastResync = 0;

  constructor(start: InitialSync) {
    this.base = start;
  }

  /**
   * Records initial-copy progress that holds once record `lsn` is applied. Reports must come in stream
   * order; one at or below an earlier report (a batch sent again) adds nothing and is ignored.
   */
  note(lsn: number, progress: Progress): void {
    if (this.base.state !== 'copying' || lsn <= this.lastProgress) return;
    this.insert({ lsn, progress });
    this.lastProgress = lsn;
  }

  /**
   * Records a RESYNC marker at `lsn` saying `left` bytes are still to resync (0 ends the resync).
   * Markers must come in stream order; one sent again is ignored.
   */
  noteResync(lsn: number, left: number): void {
    if (lsn <= this.lastResync) return;
    this.insert({ lsn, resyncLeft: left });
    this.lastResync = lsn;
  }

  /** Records the RESYNC markers of `records` from index `from` on (the rest were applied before). */
  noteResyncs(records: readonly ChangeRecord[], from: number): void {
    for (let i = from; i < records.length; i++) {
      const r = records[i]!;
      if (r.kind === RecordKind.RESYNC) this.noteResync(r.lsn, r.offset);
    }
  }

  /** Where the copy and any resync stand once every record up to `lsn` is applied. */
  at(lsn: number): InitialSync {
    let s = this.base;
    for (const m of this.marks) {
      if (m.lsn > lsn) break;
      s = advance(s, m);
    }
    return s;
  }

  /** Makes `at(lsn)` the new base: the position through `lsn` has been persisted. */
  settle(lsn: number): void {
    this.base = this.at(lsn);
    this.marks = this.marks.filter((m) => m.lsn > lsn);
  }

  /** Starts over from a persisted state (a reopened replica, or a new generation at `COPYING`). */
  resetTo(start: InitialSync): void {
    this.base = start;
    this.marks = [];
    this.lastProgress = 0;
    this.lastResync = 0;
  }

  /** Drops reports of records that will be sent again (after a rewind to `lsn`). */
  forgetAfter(lsn: number): void {
    this.marks = this.marks.filter((m) => m.lsn <= lsn);
    this.lastProgress = Math.min(this.lastProgress, lsn);
    this.lastResync = Math.min(this.lastResync, lsn);
  }

  /** Keeps `marks` in LSN order: a batch's progress report may belong to a record before its RESYNC markers. */
  private insert(m: Mark): void {
    let i = this.marks.length;
    while (i > 0 && this.marks[i - 1]!.lsn > m.lsn) i--;
    this.marks.splice(i, 0, m);
  }
}

export function sameSync(a: InitialSync, b: InitialSync): boolean {
  return (
    a.state === b.state &&
    a.done === b.done &&
    a.total === b.total &&
    a.resync?.remaining === b.resync?.remaining &&
    a.resync?.total === b.resync?.total
  );
}

/**
 * Whether the replica is a state of the source there, so a recovery point may be cut: the initial copy
 * is done and no bitmap resync is under way (DESIGN.md invariant 5).
 */
export function pointsAllowed(s: InitialSync): boolean {
  return s.state === 'done' && s.resync === undefined;
}

function advance(s: InitialSync, m: Mark): InitialSync {
  if ('resyncLeft' in m) {
    const rest: InitialSync = { state: s.state, done: s.done, total: s.total };
    if (m.resyncLeft === 0) return rest;
    return { ...rest, resync: { remaining: m.resyncLeft, total: Math.max(s.resync?.total ?? 0, m.resyncLeft) } };
  }
  if (s.state !== 'copying') return s;
  const p = m.progress;
  return {
    state: p.done >= p.total ? 'done' : 'copying',
    done: p.done,
    total: p.total,
    ...(s.resync !== undefined ? { resync: s.resync } : {}),
  };
}

/** Percentage for display, one decimal; a finished copy is 100 whatever it reported. */
export function syncPercent(s: InitialSync): number {
  if (s.state === 'done') return 100;
  if (s.total <= 0) return 0;
  return Math.min(100, Math.floor((s.done * 1000) / s.total) / 10);
}

/** Percentage of a bitmap resync done, one decimal. */
export function resyncPercent(r: NonNullable<InitialSync['resync']>): number {
  return Math.min(100, Math.floor(((r.total - r.remaining) * 1000) / r.total) / 10);
}

/**
 * The record a batch's `progress` belongs to: its last SYNC marker (the agent reports the marker's
 * count), or else the batch's last record.
 */
export function progressLsn(records: readonly ChangeRecord[]): number {
  for (let i = records.length - 1; i >= 0; i--) if (records[i]!.kind === RecordKind.SYNC) return records[i]!.lsn;
  return records[records.length - 1]!.lsn;
}
