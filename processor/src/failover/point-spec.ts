import { ErrorCode, SrError, type Logger } from '@site-recovery/shared';
import { PointError, PointErrorCode } from '../api/error-codes.js';
import { isRoundId } from '../groups/group-round.js';
import { isPointId } from '../names.js';
import type { RecoveryPoint } from '../points/recovery-point.js';
import type { Replica } from '../replica/replica-store.js';
import type { VmReplication } from '../stream/vm-replication.js';

/** How `latest` waits for the replica to reach what the cache-store holds. */
export interface CatchUp {
  readonly deadlineMs: number;
  /** How often it checks whether it has caught up. */
  readonly pollMs: number;
  /** Whether the cache-store is connected (only then is its last LSN worth waiting for). */
  readonly connected: () => boolean;
  readonly log: Logger;
}

/**
 * Turns the point an operator names into a point: `latest` (caught up first) and `latest-processed`
 * cut one at the applied position; `latest-app-consistent`, `latest-multi-vm`, a point id, a group
 * point id (the VM's point of that round), or an ISO time (the newest point at or before it) pick a
 * listed one.
 */
export async function resolvePoint(
  v: VmReplication,
  replica: Replica,
  spec: string,
  catchUp: CatchUp,
): Promise<RecoveryPoint> {
  const points = replica.points.list();
  if (spec === 'latest' || spec === 'latest-processed') {
    if (spec === 'latest') await waitForCacheStore(v, catchUp);
    return v.cutPoint('crash');
  }
  if (spec === 'latest-app-consistent') {
    const p = points.filter((x) => x.kind !== 'crash').at(-1);
    if (p === undefined) throw new PointError(PointErrorCode.POINT_NOT_FOUND, `${v.vm} has no app-consistent point`);
    return p;
  }
  if (spec === 'latest-multi-vm') {
    const p = points.filter((x) => x.kind === 'multi-vm').at(-1);
    if (p === undefined) throw new PointError(PointErrorCode.POINT_NOT_FOUND, `${v.vm} has no multi-VM point`);
    return p;
  }
  if (isRoundId(spec)) {
    const p = points.find((x) => x.kind === 'multi-vm' && x.group?.point === spec);
    if (p === undefined)
      throw new PointError(PointErrorCode.POINT_NOT_FOUND, `${v.vm} has no multi-VM point of group point ${spec}`);
    return p;
  }
  if (isPointId(spec)) {
    const p = points.find((x) => x.id === spec);
    if (p !== undefined) return p;
    if (replica.points.isPruned(spec))
      throw new PointError(PointErrorCode.POINT_PRUNED, `point ${spec} of ${v.vm} was pruned by retention`);
    throw new PointError(PointErrorCode.POINT_NOT_FOUND, `${v.vm} has no point ${spec}`);
  }
  const t = Date.parse(spec);
  if (!/^\d{4}-\d\d-\d\dT/.test(spec) || Number.isNaN(t)) {
    throw new SrError(
      ErrorCode.BAD_OPTION,
      `point "${spec}" is not latest, latest-processed, latest-app-consistent, latest-multi-vm, a point id, a group point id or an ISO time`,
    );
  }
  const p = points.filter((x) => Date.parse(x.time) <= t).at(-1);
  if (p === undefined)
    throw new PointError(PointErrorCode.POINT_NOT_FOUND, `${v.vm} has no point at or before ${spec}`);
  return p;
}

/** Waits until everything the cache-store holds is applied, or the deadline passes (the source may be gone). */
async function waitForCacheStore(v: VmReplication, c: CatchUp): Promise<void> {
  const deadline = Date.now() + c.deadlineMs;
  while (Date.now() < deadline && c.connected()) {
    const target = v.cacheStoreLastLsn;
    if (target === undefined || v.appliedLsn >= target) return;
    await new Promise((r) => setTimeout(r, c.pollMs));
  }
  if (Date.now() >= deadline)
    c.log.warn(
      { vm: v.vm, appliedLsn: v.appliedLsn, cacheStoreLastLsn: v.cacheStoreLastLsn },
      "'latest' did not catch up before its deadline; using what is applied",
    );
}
