import type { ChangeRecord, DiskInfo } from '@site-recovery/shared';
import type { GroupPointRef, PointKind, RecoveryPoint, RoundTag } from '../points/recovery-point.js';

/**
 * Where the initial copy of a generation stands. `copying` from the moment a generation starts until a
 * batch with `progress.done === progress.total` is applied; `done` after that. `none`: the VM has no
 * replica yet. Recovery points must never be cut while a replica is `copying` (DESIGN.md invariant 5),
 * so the state is persisted with the applied position it belongs to.
 */
export type InitialSyncState = 'copying' | 'done' | 'none';

export interface InitialSync {
  readonly state: InitialSyncState;
  /** Bytes copied so far, as reported by the source. */
  readonly done: number;
  /** Bytes to copy; 0 until the source has reported it. */
  readonly total: number;
  /**
   * A resync of regions the source wrote in bitmap mode is under way within the generation (from a
   * RESYNC marker with bytes left to one with none): no point may be cut, whatever `state` says.
   */
  readonly resync?: ResyncProgress;
}

/** Where a bitmap resync stands, as its RESYNC markers report it. */
export interface ResyncProgress {
  /** Bytes the source has marked dirty and not resynced yet (the latest marker's). */
  readonly remaining: number;
  /** The most that were left at once since the resync began: the basis of its percentage. */
  readonly total: number;
}

/** Where a new generation's initial copy starts. */
export const COPYING: InitialSync = { state: 'copying', done: 0, total: 0 };

/** What a replica records about itself, so that a restart resumes exactly where it left off. */
export interface ReplicaPosition {
  /**
   * Highest LSN of the generation such that it and every record before it are durable in the
   * replica disks. Records after it may or may not have reached the disks; re-applying them in order
   * is harmless.
   */
  readonly appliedLsn: number;
  readonly initialSync: InitialSync;
}

export interface ReplicaInfo extends ReplicaPosition {
  readonly vm: string;
  readonly generation: string;
  /** The VM's disks in stream order: records name disks by index into this list. */
  readonly disks: readonly DiskInfo[];
}

/** An older replica of the VM, kept read-only beside the current one for its recovery points. */
export interface RetiredReplicaInfo {
  readonly generation: string;
  readonly disks: readonly DiskInfo[];
  /** Its recovery points still held; the replica goes when retention has taken the last one. */
  readonly points: number;
}

/**
 * The processor's storage boundary: one replica per VM, each a set of disks the size of the source
 * disks plus the position they hold. The local-file implementation is the embedded default; the same
 * contract can be met by a blob store, so nothing here names a file.
 *
 * Contract (checked by `test/replica-store-contract.ts` for every implementation):
 * - `list` names every VM with a replica that `open` would return.
 * - `open` returns the replica exactly as last persisted by `create`, `reset` or `savePosition`
 *   (generation, disks, position, and the retired replicas beside it); `undefined` when the VM has
 *   none. Storage that cannot be trusted (unreadable state, a missing or wrongly sized disk holding
 *   data a point may need) is refused with an SrError rather than repaired silently.
 * - `create` makes a replica whose disks read as zeroes, positioned at 0 with the initial copy
 *   `copying`; it refuses a VM that already has one (use `Replica.reset`).
 * - VM names and disk ids are checked against the id pattern (SR_BAD_ID) before use.
 * - Only one processor opens a store at a time.
 */
export interface ReplicaStore {
  list(): Promise<string[]>;
  open(vm: string): Promise<Replica | undefined>;
  create(vm: string, generation: string, disks: readonly DiskInfo[]): Promise<Replica>;
}

/**
 * One VM's replica, open for applying.
 *
 * - `apply` is the one write path into the replica (copy-on-write for recovery points hooks in there).
 *   It applies a record's effect: WRITE stores `data`; ZERO and TRIM make the range read as zeroes,
 *   leaving never-written space unallocated; SYNC (a progress marker) changes nothing. It returns
 *   `undefined` when the change is already visible to `read` (done synchronously), or a promise that
 *   resolves once it is. Calls whose ranges overlap must not be in flight at the same time: the
 *   caller orders them. A record outside the disks throws SR_BOUNDS and changes nothing.
 * - `flush` resolves once every change whose `apply` completed before the call is on stable storage.
 * - `savePosition` persists a position atomically (all or nothing, on stable storage when it
 *   resolves); call it after the `flush` that made the data behind it durable. Calls take effect in
 *   call order.
 * - `reset` starts a new generation: position 0, initial copy `copying`. Nothing a new generation
 *   brings deletes or rewrites a recovery point (DESIGN.md invariant 6):
 *   - with the same disk layout the disks keep their data: it is the base the generation's checksum
 *     resync compares against, and the generation's records overwrite it through the ordinary
 *     copy-on-write, so every older point stays restorable;
 *   - with another layout, a replica holding points is retired: its disks and points stay, read-only,
 *     listed by `points` and restorable, until retention has taken its last point (then it goes);
 *     the replica carries on with new disks that read as zeroes at the new sizes. A replica without
 *     points simply gets the new disks.
 *   It is crash-safe: after a crash at any point, `open` returns either the old generation untouched
 *   or the new one, and every point either way.
 * - `retired` lists the older replicas kept beside this one, oldest first.
 * - After `close` no other method may be called.
 */
export interface Replica {
  readonly vm: string;
  /**
   * The VM's recovery points: this replica's (undo logs and their catalog live with the disks they
   * protect) and those of its retired replicas, which keep their own disks and logs.
   */
  readonly points: ReplicaPoints;
  /** The persisted state: what `open` would return now. */
  info(): ReplicaInfo;
  /** Where disk `index` lives, for operators (a file path, a blob URL). */
  locate(index: number): string;
  apply(record: ChangeRecord): Promise<void> | undefined;
  read(disk: number, offset: number, length: number): Promise<Buffer>;
  flush(): Promise<void>;
  savePosition(position: ReplicaPosition): Promise<void>;
  reset(generation: string, disks: readonly DiskInfo[]): Promise<void>;
  retired(): readonly RetiredReplicaInfo[];
  close(): Promise<void>;
}

/** Same disks, same order, same sizes. */
export function sameDisks(a: readonly DiskInfo[], b: readonly DiskInfo[]): boolean {
  return a.length === b.length && a.every((d, i) => d.id === b[i]?.id && d.size === b[i]?.size);
}

/** A point to cut: the replica holds exactly the records of `generation` up to `lsn`. */
export interface NewPoint {
  readonly lsn: number;
  readonly generation: string;
  readonly kind: PointKind;
  readonly time: Date;
  /** The replication group's round whose mark this point is cut at. */
  readonly round?: RoundTag;
}

/** What `ReplicaPoints.relabel` may change of a point. */
export interface PointPatch {
  readonly kind?: PointKind;
  readonly group?: GroupPointRef;
  readonly round?: RoundTag;
}

/** Step one of recovering a point: which undo logs are applied, newest first. */
export interface MaterializePlan {
  readonly point: RecoveryPoint;
  readonly disks: readonly DiskInfo[];
  readonly logs: readonly { readonly pointId: string; readonly bytes: number }[];
  /** Bytes of undo data to apply: the cost of recovering the point beyond the copy. */
  readonly undoBytes: number;
}

/**
 * Recovery points of one replica (copy-on-write undo logs, DESIGN.md "Recovery points"), or of a VM:
 * its current replica's and its retired replicas' (listed oldest first, flagged `retired`; new points,
 * `newest` and `protect` concern the current replica only; the others act on whichever holds the point).
 *
 * - `protect` is the write-ahead step: before records are applied, the old contents of every block
 *   they overwrite for the first time since the newest point are durable in that point's undo log.
 *   `undefined` when nothing needed saving. `Replica.apply` refuses a record whose blocks are not protected.
 * - `cut` records a point at the replica's current position; the caller guarantees no record past
 *   `lsn` has landed. O(1) in the size of the disks. A cut at the newest point's LSN is that point
 *   (a higher kind upgrades it, a round tag is added to it).
 * - `relabel` changes a point's kind, group point or round tag (durably); nothing it restores.
 * - `remove` drops points (the oldest in O(1); others merge their log into the next older point's).
 *   It returns false, changing nothing, while a materialisation is running.
 * - `plan` / `materialize`: recover a point into new disk files while replication continues.
 */
export interface ReplicaPoints {
  readonly blockSize: number;
  list(): RecoveryPoint[];
  newest(): RecoveryPoint | undefined;
  isPruned(id: string): boolean;
  protect(records: readonly ChangeRecord[], generation: string): Promise<void> | undefined;
  cut(point: NewPoint): Promise<RecoveryPoint>;
  relabel(id: string, patch: PointPatch): Promise<RecoveryPoint | undefined>;
  remove(ids: readonly string[], pruned: boolean): Promise<boolean>;
  plan(id: string): MaterializePlan | undefined;
  materialize(plan: MaterializePlan, targets: readonly string[]): Promise<void>;
}
