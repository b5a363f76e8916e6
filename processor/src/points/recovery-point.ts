/**
 * A recovery point: the replica of one VM as it was right after one LSN of one generation
 * (DESIGN.md invariant 3). 'crash' points are cut on a schedule, 'app' points where the agent's
 * application-consistent marker was applied, 'multi-vm' points at a replication group's cut.
 */
export type PointKind = 'crash' | 'app' | 'multi-vm';

export const POINT_KINDS: readonly PointKind[] = ['crash', 'app', 'multi-vm'];

/** What the control API shows of a point. */
export interface PointInfo {
  readonly id: string;
  /** When it was cut, ISO 8601. */
  readonly time: string;
  readonly lsn: number;
  readonly kind: PointKind;
  /** Bytes its undo log holds: the cost of keeping it. */
  readonly undoBytes: number;
}

/** A catalog entry: the point and where its undo log is. */
export interface RecoveryPoint extends PointInfo {
  readonly generation: string;
  /** File name of its undo log inside the store (never a path). */
  readonly undoLog: string;
}

/** The parts of a point a failover manifest names. */
export function pointRef(p: PointInfo): { id: string; time: string; lsn: number; kind: PointKind } {
  return { id: p.id, time: p.time, lsn: p.lsn, kind: p.kind };
}
