import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { closeFd, fdatasync, fsyncDir } from '@site-recovery/shared';
import { corrupt, scanSegment, type Segment } from './segment.js';
import { parseSegmentFileName } from '../names.js';

/** What opening a journal directory found, and what must change on disk before the journal is used. */
interface OpenPlan {
  /** The segments kept, oldest first, with their lengths after any cut. */
  readonly segments: Segment[];
  /** Last LSN the kept segments hold (or, when they hold none, the LSN before the first one's name). */
  readonly lastLsn: number;
  readonly truncate: readonly { readonly file: string; readonly to: number }[];
  readonly remove: readonly string[];
  /** Each cut and removal with its reason, for the operator's log. */
  readonly repairs: readonly string[];
}

/**
 * Plans the opening of the journal in `dir`, reading every segment in LSN order and changing
 * nothing. The first damage found (a torn or bad record, a segment whose header never reached the
 * disk, LSNs missing between segments) ends the journal there when it can be the unsynced tail a
 * crash leaves behind: in the newest segment always, and in any segment after `syncedThroughLsn`
 * (the LSN through which the journal is known to have been synced; the agent passes its checkpoint).
 * The segments after such a cut go too: a sync covers every segment before the one it syncs, so
 * none of their records was ever acknowledged as durable. Damage where the journal is known synced
 * is refused (SR_JOURNAL_CORRUPT, naming the file): records after it could not be trusted.
 */
export async function planOpen(dir: string, maxRecordBytes: number, syncedThroughLsn: number): Promise<OpenPlan> {
  const names = (await fsp.readdir(dir))
    .map((n) => ({ n, lsn: parseSegmentFileName(n) }))
    .filter((x): x is { n: string; lsn: number } => x.lsn !== undefined)
    .sort((a, b) => a.lsn - b.lsn);
  const segments: Segment[] = [];
  const truncate: { file: string; to: number }[] = [];
  const remove: string[] = [];
  const repairs: string[] = [];
  let lastLsn = 0;
  /** Removes segment `i` and every later one. */
  const dropFrom = (i: number, why: string): void => {
    const dropped = names.slice(i).map((x) => x.n);
    remove.push(...dropped.map((n) => path.join(dir, n)));
    repairs.push(`removed ${dropped.join(', ')}: ${why}`);
  };
  for (const [i, { n, lsn }] of names.entries()) {
    const file = path.join(dir, n);
    const mayCut = (at: number): boolean => i === names.length - 1 || at > syncedThroughLsn;
    const scan = await scanSegment(file, maxRecordBytes);
    if (scan === undefined) {
      if (!mayCut(lsn)) throw corrupt(`${file}: no segment header, though the journal was synced past LSN ${lsn}`);
      if (segments.length === 0) lastLsn = lsn - 1; // the name still says where the records before it ended
      dropFrom(i, 'created in a crash, its header never reached the disk');
      break;
    }
    if (scan.firstLsn !== lsn) throw corrupt(`${file}: header says first LSN ${scan.firstLsn}, name says ${lsn}`);
    if (lastLsn !== 0 && scan.records > 0 && lsn !== lastLsn + 1) {
      if (!mayCut(lastLsn + 1))
        throw corrupt(`${file}: starts at LSN ${lsn} but the previous segment ended at ${lastLsn}`);
      dropFrom(i, `LSNs ${lastLsn + 1}..${lsn - 1} before them never reached the disk`);
      break;
    }
    const damaged = scan.damage !== undefined;
    if (damaged && !mayCut(scan.lastLsn + 1)) throw corrupt(`${file} at byte ${scan.bytes}: ${scan.damage}`);
    segments.push({ firstLsn: lsn, file, bytes: scan.bytes, version: scan.version });
    if (scan.records > 0) lastLsn = scan.lastLsn;
    else if (lastLsn === 0) lastLsn = lsn - 1;
    if (damaged) {
      truncate.push({ file, to: scan.bytes });
      repairs.push(
        `cut ${n} at byte ${scan.bytes}, LSN ${scan.lastLsn + 1} onward (${scan.damage}): a write the crash interrupted`,
      );
      if (i < names.length - 1) dropFrom(i + 1, `they follow the cut in ${n}`);
      break;
    }
  }
  return { segments, lastLsn, truncate, remove, repairs };
}

/**
 * Applies `plan`: the cuts and removals, then syncs the segments holding records past
 * `syncedThrough`, and the directory. After the agent alone died those records may still be only in
 * the page cache, and the caller is about to count them as synced (the agent's redo writes a
 * checkpoint at the journal's end).
 */
export async function applyOpenPlan(dir: string, plan: OpenPlan, syncedThrough: number): Promise<void> {
  for (const t of plan.truncate) await fsp.truncate(t.file, t.to);
  for (const file of plan.remove) await fsp.unlink(file);
  if (plan.lastLsn <= syncedThrough && plan.remove.length === 0) return; // a clean stop: nothing to sync
  for (const [i, seg] of plan.segments.entries()) {
    const segLast = (plan.segments[i + 1]?.firstLsn ?? plan.lastLsn + 1) - 1;
    if (segLast <= syncedThrough) continue;
    const fd = fs.openSync(seg.file, 'r');
    try {
      await fdatasync(fd);
    } finally {
      await closeFd(fd);
    }
  }
  await fsyncDir(dir);
}
