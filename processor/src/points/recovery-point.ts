/**
 * A recovery point: the replica of one VM as it was right after one LSN of one generation
 * (DESIGN.md invariant 3). 'crash' points are cut on a schedule, 'app' points where the agent's
 * application-consistent marker was applied, 'multi-vm' points at a replication group's cut that
 * every member of the round committed.
 */
export type PointKind = 'crash' | 'app' | 'multi-vm';

export const POINT_KINDS: readonly PointKind[] = ['crash', 'app', 'multi-vm'];

/** How a round stands as far as one member's tagged point knows. */
export type RoundTagState = 'pending' | 'committed' | 'failed';

/** Why a round failed (an ABORT, a member resyncing, a member that moved on without committing). */
export interface RoundFailure {
  /** The member that failed the round, when one is known. */
  readonly failedBy?: string;
  readonly code: string;
  readonly reason: string;
  /** When this processor learnt of it, ISO 8601. */
  readonly at: string;
}

/**
 * The round of a replication group whose GROUP_MARK this point was cut at (docs/multi-vm.md): kept in
 * the point's catalog entry so that a restart rebuilds every round from the catalogs.
 */
export interface RoundTag {
  readonly group: string;
  readonly round: string;
  /** Every VM the round cuts; the round is a group point only once all of them committed. */
  readonly members: readonly string[];
  readonly coordinator: string;
  /** The coordinator's clock at the round's start (ms since the epoch): the same on every member. */
  readonly time: number;
  /** 'committed': this member's GROUP_COMMIT was applied. */
  readonly state: RoundTagState;
  readonly failure?: RoundFailure;
}

/** A multi-VM point's group and group point id (the round), the same on every member. */
export interface GroupPointRef {
  readonly name: string;
  readonly point: string;
}

/** What the control API shows of a point. */
export interface PointInfo {
  readonly id: string;
  /** When it was cut, ISO 8601. */
  readonly time: string;
  readonly lsn: number;
  readonly kind: PointKind;
  /** Bytes its undo log holds: the cost of keeping it. */
  readonly undoBytes: number;
  /** The source's generation the point belongs to. */
  readonly generation: string;
  /**
   * Set on points of a retired replica (an older disk layout of the VM): they restore that layout's
   * disks, from that replica's own bytes.
   */
  readonly retired?: boolean;
  /** Only on 'multi-vm' points: the group point it belongs to. */
  readonly group?: GroupPointRef;
}

/** A catalog entry: the point and where its undo log is. */
export interface RecoveryPoint extends PointInfo {
  /** File name of its undo log inside the store (never a path). */
  readonly undoLog: string;
  /** Set when the point was cut at a replication group's mark. */
  readonly round?: RoundTag;
}

/** The parts of a point a failover manifest names. */
export function pointRef(p: PointInfo): {
  id: string;
  time: string;
  lsn: number;
  kind: PointKind;
  group?: GroupPointRef;
} {
  return { id: p.id, time: p.time, lsn: p.lsn, kind: p.kind, ...(p.group !== undefined ? { group: p.group } : {}) };
}

/** What the control API lists of a point. */
export function pointInfo(p: PointInfo): PointInfo {
  return {
    id: p.id,
    time: p.time,
    lsn: p.lsn,
    kind: p.kind,
    undoBytes: p.undoBytes,
    generation: p.generation,
    ...(p.retired === true ? { retired: true } : {}),
    ...(p.group !== undefined ? { group: p.group } : {}),
  };
}
