import { ErrorCode, SrError, type SerialQueue } from '@site-recovery/shared';
import { PointError, PointErrorCode } from '../api/error-codes.js';
import type { RecoveryPoint, PointKind, RoundTag } from '../points/recovery-point.js';
import type { Replica } from '../replica/replica-store.js';
import type { DurabilityRounds } from './durability-rounds.js';
import type { InitialSyncTracker } from './initial-copy-tracker.js';
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
 * the newest point. Refused mid-resync (invariant 5): SR_RESYNCING.
 */
export async function cutAtApplied(c: CutContext, kind: PointKind, round?: RoundTag): Promise<RecoveryPoint> {
  const { replica, applier } = c;
  if (replica === undefined || applier === undefined)
    throw new PointError(PointErrorCode.RESYNCING, `${c.vm} has no replica yet`);
  await applier.drain();
  if (applier.failed !== undefined) throw asStorageError(applier.failed, `replica of ${c.vm} failed`);
  const lsn = applier.applied;
  if (c.sync.at(lsn).state !== 'done')
    throw new PointError(
      PointErrorCode.RESYNCING,
      `${c.vm} is resyncing (initial copy not done): no recovery point can be cut`,
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
