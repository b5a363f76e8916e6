import { ErrorCode, SrError, type ChangeRecord } from '@site-recovery/shared';
import type { RecoveryPoint } from './recovery-point.js';
import type { MaterializePlan, NewPoint, PointPatch, ReplicaPoints } from '../replica/replica-store.js';

/** A retired replica as the VM's points see it. */
export interface RetiredPoints {
  readonly points: ReplicaPoints;
}

/** What {@link VmPoints} reaches through: the current replica's points and the retired replicas. */
export interface VmPointSources<R extends RetiredPoints> {
  /** Resolves once no disk-layout switch is moving the replicas (changes and reads of files wait for it). */
  settled(): Promise<void>;
  current(): ReplicaPoints;
  retired(): readonly R[];
  /**
   * Called once retention or a commit took a retired replica's last point: the replica goes, and the
   * ids of its points are remembered as pruned when `pruned` (a failover to one says so).
   */
  drop(replica: R, pruned: boolean): Promise<void>;
}

/**
 * The recovery points of a VM: its current replica's and its retired replicas' (older disk layouts,
 * each restoring from its own disks and logs). Listed oldest first: retired replicas in the order they
 * were retired, then the current one. New points, `newest` and write-ahead concern the current replica
 * only; everything else acts on the replica that holds the point.
 */
export class VmPoints<R extends RetiredPoints> implements ReplicaPoints {
  constructor(private readonly s: VmPointSources<R>) {}

  get blockSize(): number {
    return this.s.current().blockSize;
  }

  list(): RecoveryPoint[] {
    return [
      ...this.s.retired().flatMap((r) => r.points.list().map((p) => ({ ...p, retired: true }))),
      ...this.s.current().list(),
    ];
  }

  /** The current replica's newest point: the one new records are protected against. */
  newest(): RecoveryPoint | undefined {
    return this.s.current().newest();
  }

  isPruned(id: string): boolean {
    return this.s.current().isPruned(id) || this.s.retired().some((r) => r.points.isPruned(id));
  }

  protect(records: readonly ChangeRecord[], generation: string): Promise<void> | undefined {
    return this.s.current().protect(records, generation);
  }

  async cut(point: NewPoint): Promise<RecoveryPoint> {
    await this.s.settled();
    return this.s.current().cut(point);
  }

  async relabel(id: string, patch: PointPatch): Promise<RecoveryPoint | undefined> {
    await this.s.settled();
    return this.owner(id)?.relabel(id, patch);
  }

  /** False (retention tries again later) when any replica holding one of the points is being read. */
  async remove(ids: readonly string[], pruned: boolean): Promise<boolean> {
    await this.s.settled();
    let all = true;
    for (const r of [...this.s.retired()]) {
      const mine = ids.filter((id) => r.points.list().some((p) => p.id === id));
      if (mine.length === 0) continue;
      if (!(await r.points.remove(mine, pruned))) all = false;
      else if (r.points.list().length === 0) await this.s.drop(r, pruned);
    }
    const current = this.s.current();
    const mine = ids.filter((id) => current.list().some((p) => p.id === id));
    if (mine.length > 0 && !(await current.remove(mine, pruned))) all = false;
    return all;
  }

  plan(id: string): MaterializePlan | undefined {
    return this.owner(id)?.plan(id);
  }

  /** A plan made before a disk-layout switch is carried out by the replica that holds its point after it. */
  async materialize(plan: MaterializePlan, targets: readonly string[]): Promise<void> {
    await this.s.settled();
    const owner = this.owner(plan.point.id);
    if (owner === undefined)
      throw new SrError(ErrorCode.INTERNAL, `point ${plan.point.id} vanished before it could be materialised`);
    return owner.materialize(plan, targets);
  }

  private owner(id: string): ReplicaPoints | undefined {
    const current = this.s.current();
    if (current.list().some((p) => p.id === id)) return current;
    return this.s.retired().find((r) => r.points.list().some((p) => p.id === id))?.points;
  }
}
