import { ErrorCode, SrError, type Logger } from '@site-recovery/shared';
import { readCheckpoint, writeCheckpoint } from '../agent-state.js';
import { applyRecord } from '../backend/apply-record.js';
import type { BlockBackend } from '@site-recovery/shared/nbd';
import type { Journal } from './journal.js';

/**
 * Replays journal records after the checkpoint onto the images. After a crash the journal may hold
 * writes the images lost (write-ahead order guarantees the converse never happens); replaying in LSN
 * order is idempotent, so replaying records the images already hold is harmless.
 *
 * `cleanParts` (the dirty bitmap) leaves out the regions written in bitmap mode: there the image may
 * hold a newer write that no record carries, which replaying an older record would undo, and the
 * resync sends whatever the image holds there anyway. A lost write there was never flushed (a FLUSH
 * syncs the image), so leaving it out is a state a crash may leave.
 */
export async function redo(
  dataDir: string,
  journal: Journal,
  images: readonly BlockBackend[],
  log: Logger,
  cleanParts?: (disk: number, offset: number, length: number) => [number, number][],
): Promise<number> {
  const from = Math.max(await readCheckpoint(dataDir), journal.firstLsn - 1);
  let n = 0;
  for await (const r of journal.read(from + 1)) {
    const image = images[r.disk];
    if (image === undefined)
      throw new SrError(
        ErrorCode.JOURNAL_CORRUPT,
        `journal record ${r.lsn} names disk ${r.disk}, which this VM does not have`,
      );
    if (cleanParts === undefined || r.length === 0) await applyRecord(image, r);
    else
      for (const [offset, length] of cleanParts(r.disk, r.offset, r.length)) {
        const data = r.data?.subarray(offset - r.offset, offset - r.offset + length);
        await applyRecord(image, { ...r, offset, length, ...(data !== undefined ? { data } : {}) });
      }
    n++;
  }
  if (n > 0) {
    await Promise.all(images.map((i) => i.flush()));
    log.info({ records: n, from: from + 1, to: journal.lastLsn }, 'replayed journal tail onto the images');
  }
  await writeCheckpoint(dataDir, journal.lastLsn);
  return journal.lastLsn;
}
