/**
 * The unit of replication: one write-type request of a VM, numbered by its log sequence number (LSN).
 * LSNs form one sequence per VM across all of its disks (DESIGN.md invariant 1). They start at 1 and
 * are plain numbers: 2^53 writes outlast any disk.
 */
export const RecordKind = {
  /** Bytes written; `data` holds them. */
  WRITE: 1,
  /** The range reads back as zeroes afterwards. */
  ZERO: 2,
  /** The guest discarded the range; applied as zeroes so source and replica agree byte for byte. */
  TRIM: 3,
  /**
   * Progress of the initial copy of a new generation, in stream order: `offset` is the number of
   * bytes of the VM's disks copied so far, `length` 0, no payload. Changes no data; the copy is
   * complete once a marker with `offset` equal to the disks' total size is applied.
   */
  SYNC: 4,
  /**
   * An application-consistent point: the agent ran the VM's pre-snapshot (freeze) command
   * successfully and every write before this record was complete. `offset` carries the agent's
   * sequence number for the point, `length` 0, no payload. Changes no data.
   */
  APP: 5,
  /**
   * A replication group's barrier reached this VM (docs/multi-vm.md): every write before this record
   * is in the group's cut, no write after it completed before the round's COMMIT. `length` 0; `data`
   * is the round as JSON ({@link GroupMark} in group-record.ts). Changes no data.
   */
  GROUP_MARK: 6,
  /** This VM held its writes from its GROUP_MARK until the coordinator's COMMIT; `data` names the round. */
  GROUP_COMMIT: 7,
  /** The round was given up on this VM (timeout, an ABORT, a member missing); `data` names it and why. */
  GROUP_ABORT: 8,
  /**
   * Dirty-region tracking within a generation (the agent's bitmap mode, agent/src/bitmap/): `offset`
   * is how many bytes of the VM's disks are marked dirty and not yet resynced, `length` 0, no
   * payload. A marker with `offset` > 0 says that from here the replica is not a state of the
   * source (writes reached the source without an LSN) until a marker with `offset` 0 ends the
   * resync. Changes no data; no recovery point may be cut in between (DESIGN.md invariant 5).
   */
  RESYNC: 9,
  /**
   * A watch-mode agent's clean scan ended here (agent/src/watch/, docs/architecture.md "Watch mode"):
   * with every record before it applied, the replica is the image as it stood during a scan that no
   * write overlapped, the only moment such a VM's replica is a state of its source. `offset` carries
   * the agent's scan number, `length` 0, no payload. Changes no data; for a VM in watch mode the
   * processor cuts crash-consistent points here and nowhere else.
   */
  SCAN: 10,
} as const;

export type RecordKind = (typeof RecordKind)[keyof typeof RecordKind];

export interface ChangeRecord {
  readonly lsn: number;
  readonly kind: RecordKind;
  /** Index of the disk in the VM's disk list (stable for a generation). */
  readonly disk: number;
  readonly offset: number;
  readonly length: number;
  /**
   * WRITE: the bytes written, `length` of them. Group records: their JSON document (`length` is 0).
   * Absent for every other kind.
   */
  readonly data?: Buffer;
  /** CRC-32C from `recordChecksum`, computed at capture; absent only before it is first computed. */
  readonly crc?: number;
  /** Wall-clock capture time (ms since the epoch), for measuring replication lag. */
  readonly time?: number;
}

/** The kinds a record may have; anything else is refused when decoding. */
export function isRecordKind(kind: number): kind is RecordKind {
  return (
    kind === RecordKind.WRITE ||
    kind === RecordKind.ZERO ||
    kind === RecordKind.TRIM ||
    kind === RecordKind.SYNC ||
    kind === RecordKind.APP ||
    kind === RecordKind.GROUP_MARK ||
    kind === RecordKind.GROUP_COMMIT ||
    kind === RecordKind.GROUP_ABORT ||
    kind === RecordKind.RESYNC ||
    kind === RecordKind.SCAN
  );
}

/** The replication group's records (GROUP_MARK, GROUP_COMMIT, GROUP_ABORT). */
export function isGroupKind(kind: number): boolean {
  return kind === RecordKind.GROUP_MARK || kind === RecordKind.GROUP_COMMIT || kind === RecordKind.GROUP_ABORT;
}

/** Records that change no data: progress, app-consistent, group, resync and clean-scan markers. Their `length` is 0. */
export function isMarkerKind(kind: number): boolean {
  return (
    kind === RecordKind.SYNC ||
    kind === RecordKind.APP ||
    kind === RecordKind.RESYNC ||
    kind === RecordKind.SCAN ||
    isGroupKind(kind)
  );
}

/** Most bytes a group record's JSON may take: a round names up to a few hundred members. */
export const MAX_GROUP_RECORD_BYTES = 64 * 1024;

export function recordKindName(kind: number): string {
  switch (kind) {
    case RecordKind.WRITE:
      return 'write';
    case RecordKind.ZERO:
      return 'zero';
    case RecordKind.TRIM:
      return 'trim';
    case RecordKind.SYNC:
      return 'sync';
    case RecordKind.APP:
      return 'app';
    case RecordKind.GROUP_MARK:
      return 'group-mark';
    case RecordKind.GROUP_COMMIT:
      return 'group-commit';
    case RecordKind.GROUP_ABORT:
      return 'group-abort';
    case RecordKind.RESYNC:
      return 'resync';
    case RecordKind.SCAN:
      return 'scan';
    default:
      return `unknown(${kind})`;
  }
}
