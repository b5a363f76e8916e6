import { ErrorCode, SrError, type ChangeRecord, type Progress } from '@site-recovery/shared';
import type { Replica } from '../replica/replica-store.js';
import type { CacheStorePosition } from './cache-store-position.js';
import type { DurabilityRounds } from './durability-rounds.js';
import { progressLsn, type InitialSyncTracker } from './initial-copy-tracker.js';
import { atMarker, decodeGroupMarkers, type GroupRecordHooks, type MarkerTarget } from './markers.js';
import { submitProtected } from './protected-submit.js';
import type { RecordApplier } from './record-applier.js';
import { asStorageError, isStorageCode } from './storage-error.js';

/** A VM's replication as a batch sees it, with its applying queue held. */
export interface BatchContext {
  readonly vm: string;
  readonly sync: InitialSyncTracker;
  readonly rounds: DurabilityRounds;
  readonly cacheStore: CacheStorePosition;
  /** What a marker acts on (markers.ts). */
  readonly markers: MarkerTarget;
  /** Where the VM's replication-group records go (absent: they cut and record nothing). */
  readonly group: GroupRecordHooks | undefined;
  replica(): Replica | undefined;
  applier(): RecordApplier | undefined;
  /** The replica's storage failed: applying pauses at the durable position. */
  pause(err: SrError): void;
}

/**
 * Applies a verified batch of `generation`: records up to what was submitted are skipped (a resend),
 * the rest must follow on from it (SR_SEQUENCE otherwise, before anything of the batch is applied).
 * False when the replica's storage failed and applying paused instead.
 */
export async function applyBatchTo(
  c: BatchContext,
  generation: string,
  records: readonly ChangeRecord[],
  progress: Progress | undefined,
): Promise<boolean> {
  const { vm, sync } = c;
  const replica = c.replica();
  const applier = c.applier();
  if (applier === undefined || replica?.info().generation !== generation)
    throw new SrError(ErrorCode.PROTOCOL, `batch for ${vm} before its stream began`);
  // Group payloads are checked before anything of the batch is applied (SR_PROTOCOL).
  const groups = decodeGroupMarkers(records);
  c.cacheStore.noteBatch(generation, records[0]!.lsn, records[records.length - 1]!.lsn);
  let skip = 0;
  while (skip < records.length && records[skip]!.lsn <= applier.submitted) skip++;
  if (skip === records.length) {
    if (progress !== undefined) sync.note(progressLsn(records), progress);
    return true;
  }
  const first = records[skip]!.lsn;
  if (first !== applier.submitted + 1) {
    throw new SrError(
      ErrorCode.SEQUENCE,
      `batch of ${vm} continues at LSN ${first}, the replica holds up to ${applier.submitted}: records are missing`,
    );
  }
  if (progress !== undefined) sync.note(progressLsn(records), progress);
  // Before anything is submitted: a marker of this batch after a RESYNC must see the resync.
  sync.noteResyncs(records, skip);
  const unseen = skip === 0 ? records : records.slice(skip);
  try {
    await submitProtected(applier, replica.points, generation, unseen, (m) =>
      atMarker(c.markers, c.group, m, groups?.get(m.lsn)),
    );
  } catch (err) {
    const e = asStorageError(err, `replica of ${vm} could not be written`);
    if (!isStorageCode(e.code)) throw err;
    c.pause(e);
    return false;
  }
  for (let i = skip; i < records.length; i++) c.rounds.bytesSinceFlush += records[i]!.length;
  return true;
}
