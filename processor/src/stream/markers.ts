import {
  RecordKind,
  decodeGroupRecord,
  isGroupKind,
  type ChangeRecord,
  type GroupAbort,
  type GroupCommit,
  type GroupMark,
  type GroupRecord,
  type Logger,
} from '@site-recovery/shared';
import type { PointKind, RecoveryPoint, RoundTag } from '../points/recovery-point.js';

/** What the rest of the processor does with a VM's group records (the group tracker, membership). */
export interface GroupRecordHooks {
  /** `point` was cut at the mark's LSN; `undefined` when the VM was resyncing there. */
  marked(vm: string, mark: GroupMark, point: RecoveryPoint | undefined): Promise<void>;
  committed(vm: string, commit: GroupCommit): Promise<void>;
  aborted(vm: string, abort: GroupAbort): Promise<void>;
}

/**
 * The group records of a batch by LSN, each payload checked: a malformed one is SR_PROTOCOL and
 * refuses the whole batch before anything of it is applied (DESIGN.md invariant 4).
 */
export function decodeGroupMarkers(records: readonly ChangeRecord[]): ReadonlyMap<number, GroupRecord> | undefined {
  let out: Map<number, GroupRecord> | undefined;
  for (const r of records) {
    if (!isGroupKind(r.kind)) continue;
    (out ??= new Map()).set(r.lsn, decodeGroupRecord(r.kind, r.data));
  }
  return out;
}

/** What acting on a marker needs of the VM's replication. */
export interface MarkerTarget {
  readonly vm: string;
  readonly log: Logger;
  /** Whether the initial copy is done once record `lsn` is applied. */
  copiedAt(lsn: number): boolean;
  /** Cuts a point at the applied position (the marker's LSN), tagged with a round if given. */
  cut(kind: PointKind, round?: RoundTag): Promise<RecoveryPoint>;
  /** Waits until every record submitted so far has landed. */
  drain(): Promise<void>;
  /** Whether the VM's agent watches its images (a point only at a clean scan; nothing is app-consistent). */
  watched(): boolean;
  /** A watch-mode agent's clean scan ends at `lsn`: the replica is the image as it stood then. */
  cleanScan(lsn: number): Promise<void>;
}

/**
 * At a marker, with every record before it submitted and none after (protected-submit.ts splits
 * there). An app-consistent marker cuts an 'app' point. A group mark cuts a crash point tagged with
 * its round; a commit is recorded once everything before it has landed; an abort fails the round.
 * No point is cut while the initial copy runs (DESIGN.md invariant 5): a mark then fails its round.
 * A clean-scan marker goes to `cleanScan`; a watch-mode VM's app marker cuts nothing (no write of
 * such a VM is ordered, so nothing says the scan around the marker saw a quiesced state).
 * `group` is the marker's decoded payload when it is a group record.
 */
export async function atMarker(
  t: MarkerTarget,
  hooks: GroupRecordHooks | undefined,
  marker: ChangeRecord,
  group: GroupRecord | undefined,
): Promise<void> {
  const lsn = marker.lsn;
  if (group === undefined) {
    if (marker.kind === RecordKind.SCAN) return t.cleanScan(lsn);
    if (marker.kind !== RecordKind.APP) return;
    if (t.watched()) t.log.warn({ vm: t.vm, lsn }, 'app-consistent marker from a watch-mode agent: no point cut');
    else if (t.copiedAt(lsn)) await t.cut('app');
    else t.log.warn({ vm: t.vm, lsn }, 'app-consistent marker during resync: no point cut');
    return;
  }
  const g = group;
  switch (g.kind) {
    case RecordKind.GROUP_MARK: {
      const m = g.doc;
      let point: RecoveryPoint | undefined;
      if (t.copiedAt(lsn)) {
        const tag: RoundTag = {
          group: m.group,
          round: m.round,
          members: [...m.members],
          coordinator: m.coordinator,
          time: m.time,
          state: 'pending',
        };
        point = await t.cut('crash', tag);
      } else t.log.warn({ vm: t.vm, lsn, group: m.group, round: m.round }, 'group mark during resync: the round fails');
      await hooks?.marked(t.vm, m, point);
      return;
    }
    case RecordKind.GROUP_COMMIT:
      await t.drain();
      await hooks?.committed(t.vm, g.doc);
      return;
    case RecordKind.GROUP_ABORT:
      await hooks?.aborted(t.vm, g.doc);
      return;
  }
}
