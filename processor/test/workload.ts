import {
  RecordKind,
  encodeGroupRecord,
  recordChecksum,
  type ChangeRecord,
  type DiskInfo,
  type GroupAbort,
  type GroupCommit,
  type GroupMark,
} from '@site-recovery/shared';

/** Records of a test workload, with the image they produce. */
export class Workload {
  readonly records: ChangeRecord[] = [];
  readonly images: Buffer[];

  constructor(
    readonly disks: DiskInfo[],
    private seed = 1,
  ) {
    this.images = disks.map((d) => Buffer.alloc(d.size));
  }

  get lastLsn(): number {
    return this.records.length;
  }

  write(disk: number, offset: number, length: number, time = Date.now()): ChangeRecord {
    const data = Buffer.allocUnsafe(length);
    for (let i = 0; i < length; i += 4) data.writeUInt32LE(this.rand(), i);
    return this.push({ lsn: 0, kind: RecordKind.WRITE, disk, offset, length, data, time });
  }

  /** A write of a repeated byte: compresses, so batches travel lz4. */
  fill(disk: number, offset: number, length: number, byte: number): ChangeRecord {
    return this.push({
      lsn: 0,
      kind: RecordKind.WRITE,
      disk,
      offset,
      length,
      data: Buffer.alloc(length, byte),
      time: Date.now(),
    });
  }

  zero(disk: number, offset: number, length: number): ChangeRecord {
    return this.push({ lsn: 0, kind: RecordKind.ZERO, disk, offset, length, time: Date.now() });
  }

  trim(disk: number, offset: number, length: number): ChangeRecord {
    return this.push({ lsn: 0, kind: RecordKind.TRIM, disk, offset, length, time: Date.now() });
  }

  /** An initial-copy progress marker: `done` bytes of the VM's disks copied. Changes no data. */
  sync(done: number): ChangeRecord {
    return this.push({ lsn: 0, kind: RecordKind.SYNC, disk: 0, offset: done, length: 0, time: Date.now() });
  }

  /** An app-consistent marker (the agent's point `seq`). Changes no data. */
  app(seq: number): ChangeRecord {
    return this.push({ lsn: 0, kind: RecordKind.APP, disk: 0, offset: seq, length: 0, time: Date.now() });
  }

  /** A watch-mode agent's clean-scan marker (its scan `seq`). Changes no data. */
  scan(seq: number): ChangeRecord {
    return this.push({ lsn: 0, kind: RecordKind.SCAN, disk: 0, offset: seq, length: 0, time: Date.now() });
  }

  /** A replication group's record (a marker: no data changes), its document as the payload. */
  group(kind: 'mark', doc: GroupMark): ChangeRecord;
  group(kind: 'commit', doc: GroupCommit): ChangeRecord;
  group(kind: 'abort', doc: GroupAbort): ChangeRecord;
  group(kind: 'mark' | 'commit' | 'abort', doc: GroupMark | GroupCommit | GroupAbort): ChangeRecord {
    const k =
      kind === 'mark' ? RecordKind.GROUP_MARK : kind === 'commit' ? RecordKind.GROUP_COMMIT : RecordKind.GROUP_ABORT;
    return this.push({
      lsn: 0,
      kind: k,
      disk: 0,
      offset: 0,
      length: 0,
      data: encodeGroupRecord(doc),
      time: Date.now(),
    });
  }

  /** The disks as they were right after record `lsn` (replayed from the start). */
  imagesAt(lsn: number): Buffer[] {
    const imgs = this.disks.map((d) => Buffer.alloc(d.size));
    for (const r of this.records.slice(0, lsn)) {
      if (r.kind === RecordKind.WRITE) r.data!.copy(imgs[r.disk]!, r.offset);
      else if (r.kind === RecordKind.ZERO || r.kind === RecordKind.TRIM)
        imgs[r.disk]!.fill(0, r.offset, r.offset + r.length);
    }
    return imgs;
  }

  /** Records `from`..`to` (inclusive). */
  range(from: number, to: number): ChangeRecord[] {
    return this.records.slice(from - 1, to);
  }

  /** Random records of every kind, some overlapping, sizes from 512 B to `maxLength`. */
  random(count: number, maxLength = 256 * 1024): void {
    for (let i = 0; i < count; i++) {
      const disk = this.rand() % this.disks.length;
      const size = this.disks[disk]!.size;
      const length = Math.min(size, 512 * (1 + (this.rand() % (maxLength / 512))));
      const offset = 512 * (this.rand() % ((size - length) / 512 + 1));
      const k = this.rand() % 10;
      if (k < 7) this.write(disk, offset, length);
      else if (k < 9) this.zero(disk, offset, length);
      else this.trim(disk, offset, length);
    }
  }

  private push(r: ChangeRecord): ChangeRecord {
    const rec: ChangeRecord = { ...r, lsn: this.records.length + 1 };
    const withCrc: ChangeRecord = { ...rec, crc: recordChecksum(rec, rec.data) };
    this.records.push(withCrc);
    const img = this.images[r.disk]!;
    if (r.kind === RecordKind.WRITE) r.data!.copy(img, r.offset);
    else if (r.kind === RecordKind.ZERO || r.kind === RecordKind.TRIM) img.fill(0, r.offset, r.offset + r.length);
    return withCrc;
  }

  private rand(): number {
    // xorshift32: deterministic, so a failure can be replayed
    let x = this.seed;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.seed = x >>> 0;
    return this.seed;
  }
}

/** Consecutive slices of `records` of at most `size` records each. */
export function chunks<T>(records: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < records.length; i += size) out.push(records.slice(i, i + size));
  return out;
}
