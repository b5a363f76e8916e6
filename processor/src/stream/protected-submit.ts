import { RecordKind, isGroupKind, type ChangeRecord } from '@site-recovery/shared';
import type { ReplicaPoints } from '../replica/replica-store.js';
import type { RecordApplier } from './record-applier.js';

/**
 * Submits records in segments ending at each app-consistent, clean-scan or replication-group marker: each
 * segment's overwritten blocks are saved first (write-ahead, one fdatasync per segment), and at a
 * marker `atMarker` runs (it drains the applier and cuts a point at the marker's LSN, or records a
 * member's commit or abort) before anything after it is submitted.
 */
export async function submitProtected(
  applier: RecordApplier,
  points: ReplicaPoints,
  generation: string,
  records: readonly ChangeRecord[],
  atMarker: (marker: ChangeRecord) => Promise<unknown>,
): Promise<void> {
  let from = 0;
  while (from < records.length) {
    let to = from;
    while (to < records.length && !splitsAt(records[to]!.kind)) to++;
    const segment = records.slice(from, Math.min(to + 1, records.length));
    const newest = points.newest();
    // Records replayed below the newest point are not protected; one of them still in flight
    // must land before old contents are read for the records after the point.
    if (
      newest !== undefined &&
      newest.generation === generation &&
      applier.applied < applier.submitted &&
      applier.submitted <= newest.lsn
    )
      await applier.drain();
    const saving = points.protect(segment, generation);
    if (saving !== undefined) await saving;
    await applier.submit(segment);
    if (to < records.length) await atMarker(records[to]!);
    from = to + 1;
  }
}

/** Markers that something happens at, with every record before them landed and none after. */
function splitsAt(kind: number): boolean {
  return kind === RecordKind.APP || kind === RecordKind.SCAN || isGroupKind(kind);
}
