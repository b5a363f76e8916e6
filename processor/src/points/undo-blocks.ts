import { RecordKind, isMarkerKind, type ChangeRecord, type DiskInfo } from '@site-recovery/shared';
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
/** Merges append in groups of about this many bytes (one fdatasync each). */
const APPEND_GROUP_BYTES = 8 << 20;

/**
 * Blocks a batch overwrites that the newest point's log does not hold yet, in two sets: those a WRITE
 * touches (always saved) and those only zeroing records (ZERO, TRIM) touch, which need saving only if
 * they hold data: zeroing a block that reads as zeroes leaves it as it was.
 */
export interface BlocksToSave {
  readonly written: BlockSet;
  readonly zeroed: BlockSet;
}

/**
 * Blocks the records overwrite that the newest point's log does not hold yet; `undefined` when none
 * (or there is no point to protect). Records at or below that point's LSN (replayed after a restart)
 * belong before the point and need nothing. Blocks in `zeroes` were found all zero since the newest
 * point: zeroing records need nothing for them.
 */
export function blocksToSave(
  records: readonly ChangeRecord[],
  generation: string,
  newest: RecoveryPoint | undefined,
  open: UndoLog | undefined,
  blockSize: number,
  zeroes: ZeroBlocks,
): BlocksToSave | undefined {
  if (newest === undefined || open === undefined) return undefined;
  let written: BlockSet | undefined;
  let zeroed: BlockSet | undefined;
  for (const r of records) {
    if (isMarkerKind(r.kind) || r.length === 0) continue;
    if (newest.generation === generation && r.lsn <= newest.lsn) continue;
    const write = r.kind === RecordKind.WRITE;
    const last = Math.floor((r.offset + r.length - 1) / blockSize);
    for (let b = Math.floor(r.offset / blockSize); b <= last; b++) {
      if (open.has(r.disk, b)) continue;
      if (write) {
        add((written ??= new Map<number, Set<number>>()), r.disk, b);
        zeroed?.get(r.disk)?.delete(b);
      } else if (!zeroes.has(r.disk, b) && written?.get(r.disk)?.has(b) !== true) {
        add((zeroed ??= new Map<number, Set<number>>()), r.disk, b);
      }
    }
  }
  if (written === undefined && zeroed === undefined) return undefined;
  return { written: written ?? new Map<number, Set<number>>(), zeroed: zeroed ?? new Map<number, Set<number>>() };
}

function add(set: BlockSet, disk: number, block: number): void {
  let s = set.get(disk);
  if (s === undefined) set.set(disk, (s = new Set()));
  s.add(block);
}

/**
 * Blocks found all zero since the newest point, one bit per block and disk (a 1 TiB disk at 64 KiB
 * blocks takes 2 MiB). A new generation's initial copy sends a ZERO record for every zero chunk of
 * the source; without this, each would save an undo entry for every block it covers, and check it
 * again on the next batch. Valid until the open log changes (a cut or a removal clears it).
 */
export class ZeroBlocks {
  private bits: Uint8Array[] = [];

  constructor(
    private readonly disks: () => readonly DiskInfo[],
    private readonly blockSize: number,
  ) {}

  has(disk: number, block: number): boolean {
    const m = this.bits[disk];
    return m !== undefined && block >> 3 < m.length && (m[block >> 3]! & (1 << (block & 7))) !== 0;
  }

  add(disk: number, block: number): void {
    let m = this.bits[disk];
    if (m === undefined) {
      const size = this.disks()[disk]?.size ?? 0;
      m = this.bits[disk] = new Uint8Array(Math.ceil(Math.ceil(size / this.blockSize) / 8));
    }
    if (block >> 3 < m.length) m[block >> 3]! |= 1 << (block & 7);
  }

  clear(): void {
    this.bits = [];
  }
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
