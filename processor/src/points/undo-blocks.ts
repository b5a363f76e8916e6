import { isMarkerKind, type ChangeRecord, type DiskInfo } from '@site-recovery/shared';
import type { RecoveryPoint } from './recovery-point.js';
import type { UndoEntry, UndoLog } from './undo-log.js';

// Which blocks an undo log must save, and reading their old contents from the replica: the
// copy-on-write half of the point store (the catalog half is file-point-store.ts).

/** What the point store needs of the replica it protects. */
export interface DiskSource {
  disks(): readonly DiskInfo[];
  /** Where disk `index` lives (the materialiser copies it). */
  file(index: number): string;
  read(disk: number, offset: number, length: number): Promise<Buffer>;
}

/** Block indexes by disk index. */
export type BlockSet = Map<number, Set<number>>;

/** Reads of old block contents coalesce adjacent blocks up to this many bytes. */
const READ_RUN_BYTES = 4 << 20;
/** Merges and whole-disk saves append in groups of about this many bytes (one fdatasync each). */
const APPEND_GROUP_BYTES = 8 << 20;

/**
 * Blocks the records overwrite that the newest point's log does not hold yet; `undefined` when none
 * (or there is no point to protect). Records at or below that point's LSN (replayed after a restart)
 * belong before the point and need nothing.
 */
export function blocksToSave(
  records: readonly ChangeRecord[],
  generation: string,
  newest: RecoveryPoint | undefined,
  open: UndoLog | undefined,
  blockSize: number,
): BlockSet | undefined {
  if (newest === undefined || open === undefined) return undefined;
  let wanted: BlockSet | undefined;
  for (const r of records) {
    if (isMarkerKind(r.kind) || r.length === 0) continue;
    if (newest.generation === generation && r.lsn <= newest.lsn) continue;
    const last = Math.floor((r.offset + r.length - 1) / blockSize);
    for (let b = Math.floor(r.offset / blockSize); b <= last; b++) {
      if (open.has(r.disk, b)) continue;
      wanted ??= new Map();
      let s = wanted.get(r.disk);
      if (s === undefined) wanted.set(r.disk, (s = new Set()));
      s.add(b);
    }
  }
  return wanted;
}

/** The blocks' current contents as undo entries, read in coalesced runs; all-zero blocks carry no payload. */
export async function readBlocks(source: DiskSource, wanted: BlockSet, blockSize: number): Promise<UndoEntry[]> {
  const bs = blockSize;
  const entries: UndoEntry[] = [];
  for (const [disk, set] of wanted) {
    const size = source.disks()[disk]!.size;
    const blocks = [...set].sort((a, b) => a - b);
    for (let i = 0; i < blocks.length;) {
      let j = i + 1;
      while (j < blocks.length && blocks[j] === blocks[j - 1]! + 1 && (j - i + 1) * bs <= READ_RUN_BYTES) j++;
      const start = blocks[i]! * bs;
      const end = Math.min(size, (blocks[j - 1]! + 1) * bs);
      const buf = await source.read(disk, start, end - start);
      for (let o = 0; o < buf.length; o += bs) {
        const data = buf.subarray(o, Math.min(o + bs, buf.length));
        entries.push({ disk, offset: start + o, length: data.length, data: isZero(data) ? undefined : data });
      }
      i = j;
    }
  }
  return entries;
}

/**
 * Saves into `open` every block holding data that it lacks: the whole-disk overwrite a new
 * generation's wipe is. Blocks that read as zeroes need nothing: they still do after the wipe.
 */
export async function saveDataBlocks(source: DiskSource, open: UndoLog, blockSize: number): Promise<void> {
  const bs = blockSize;
  const disks = source.disks();
  const group = new AppendGroup(open);
  for (let d = 0; d < disks.length; d++) {
    const size = disks[d]!.size;
    for (let at = 0; at < size; at += READ_RUN_BYTES) {
      const buf = await source.read(d, at, Math.min(READ_RUN_BYTES, size - at));
      for (let o = 0; o < buf.length; o += bs) {
        const block = (at + o) / bs;
        const data = buf.subarray(o, Math.min(o + bs, buf.length));
        if (open.has(d, block) || isZero(data)) continue;
        group.add({ disk: d, offset: at + o, length: data.length, data: Buffer.from(data) });
      }
      await group.flushIfFull();
    }
  }
  await group.flush();
}

/** Appends to `older` the entries of `removed` for blocks `older` lacks (removing the point between them). */
export async function mergeInto(removed: UndoLog, older: UndoLog, blockSize: number): Promise<void> {
  const group = new AppendGroup(older);
  await removed.forEach(async (e) => {
    if (older.has(e.disk, e.offset / blockSize)) return;
    group.add(e);
    await group.flushIfFull();
  });
  await group.flush();
}

/** Entries gathered for one append (one fdatasync) of about {@link APPEND_GROUP_BYTES}. */
class AppendGroup {
  private entries: UndoEntry[] = [];
  private bytes = 0;

  constructor(private readonly log: UndoLog) {}

  add(e: UndoEntry): void {
    this.entries.push(e);
    this.bytes += e.length;
  }

  async flushIfFull(): Promise<void> {
    if (this.bytes >= APPEND_GROUP_BYTES) await this.flush();
  }

  async flush(): Promise<void> {
    const entries = this.entries;
    this.entries = [];
    this.bytes = 0;
    await this.log.append(entries);
  }
}

const ZERO_BLOCK = Buffer.alloc(64 * 1024);

function isZero(b: Buffer): boolean {
  for (let o = 0; o < b.length; o += ZERO_BLOCK.length) {
    const n = Math.min(ZERO_BLOCK.length, b.length - o);
    if (b.compare(ZERO_BLOCK, 0, n, o, o + n) !== 0) return false;
  }
  return true;
}
