import { ErrorCode, SrError, type SerialQueue } from '@site-recovery/shared';
import { PointError, PointErrorCode } from '../api/error-codes.js';
import type { RecoveryPoint, PointKind, RoundTag } from '../points/recovery-point.js';
import type { Replica } from '../replica/replica-store.js';
import type { DurabilityRounds } from './durability-rounds.js';
import { pointsAllowed, type InitialSyncTracker } from './initial-copy-tracker.js';
import type { RecordApplier } from './record-applier.js';
import { asStorageError } from './storage-error.js';

/** A VM's replication as a cut sees it, with its applying queue held (no batch half-submitted). */
export interface CutContext {
  readonly vm: string;
  readonly replica: Replica | undefined;
  readonly applier: RecordApplier | undefined;
  readonly sync: InitialSyncTracker;
  readonly rounds: DurabilityRounds;
  /** The VM's queue of generation changes and durability rounds. */
  readonly exclusive: SerialQueue;
}

/**
 * Cuts a point at the applied position (DESIGN.md invariant 3): every record up to it has landed and
 * none after it has. The replica is made durable up to it first, so a restart never resumes below
 * the newest point. Refused mid-copy and mid-resync of a bitmap's regions (invariant 5): SR_RESYNCING.
 */
export async function cutAtApplied(c: CutContext, kind: PointKind, round?: RoundTag): Promise<RecoveryPoint> {
  const { replica, applier } = c;
  if (replica === undefined || applier === undefined)
    throw new PointError(PointErrorCode.RESYNCING, `${c.vm} has no replica yet`);
  await applier.drain();
  if (applier.failed !== undefined) throw asStorageError(applier.failed, `replica of ${c.vm} failed`);
  const lsn = applier.applied;
  const sync = c.sync.at(lsn);
  if (!pointsAllowed(sync))
    throw new PointError(
      PointErrorCode.RESYNCING,
      sync.state !== 'done'
        ? `${c.vm} is resyncing (initial copy not done): no recovery point can be cut`
        : `${c.vm} is resyncing the regions its agent wrote in bitmap mode: no recovery point can be cut until that ends`,
    );
  await c.exclusive.run(() => c.rounds.once());
  if (c.rounds.durableLsn < lsn)
    throw new SrError(ErrorCode.IO, `replica of ${c.vm} could not be made durable up to LSN ${lsn}; no point cut`);
  return replica.points.cut({
    lsn,
    generation: replica.info().generation,
    kind,
    time: new Date(),
    ...(round !== undefined ? { round } : {}),
  });
}
