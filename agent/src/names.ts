import path from 'node:path';
import { lsnFileName, parseLsnFileName } from '@site-recovery/shared';

/**
 * Every name the agent gives a file in its data directory is built and parsed here, and nowhere else.
 *
 * <data-dir>/
 *   agent-state.json          VM name and disk layout the directory belongs to
 *   checkpoint.json           LSN through which the images are known to be on stable storage
 *   group-term.json           the highest replication-group term this member has seen (group/term-store.ts)
 *   resync-sums.bin           the replica's block sums while a copy by difference uses them (scratch)
 *   dirty-bitmap.srb          regions written while the journal was at its cap (bitmap/bitmap-format.ts)
 *   bitmap-mode.json          present while the bitmap holds regions the stream lacks (bitmap/dirty-bitmap.ts)
 *   journal/
 *     0000000000000001.srj    segment whose first record has LSN 1 (16 hex digits)
 *   journal.retired/          the journal a new generation let go, removed once closed (and at start)
 *   watch/                    watch mode only (agent/src/watch/)
 *     <disk-id>.sums          the sum of each block of the disk as last shipped (shipped-sums.ts)
 *
 * In watch mode checkpoint.json holds the LSN through which the journal is synced (there is no image
 * to redo onto: another process owns it).
 */
const STATE_FILE = 'agent-state.json';
const CHECKPOINT_FILE = 'checkpoint.json';
const GROUP_TERM_FILE = 'group-term.json';
const RESYNC_SUMS_FILE = 'resync-sums.bin';
const BITMAP_FILE = 'dirty-bitmap.srb';
const BITMAP_MODE_FILE = 'bitmap-mode.json';
const JOURNAL_DIR = 'journal';
const RETIRED_JOURNAL_DIR = 'journal.retired';
const SEGMENT_EXT = 'srj';
const WATCH_DIR = 'watch';
const SUMS_EXT = '.sums';

export function stateFile(dataDir: string): string {
  return path.join(dataDir, STATE_FILE);
}

export function checkpointFile(dataDir: string): string {
  return path.join(dataDir, CHECKPOINT_FILE);
}

export function groupTermFile(dataDir: string): string {
  return path.join(dataDir, GROUP_TERM_FILE);
}

export function resyncSumsFile(dataDir: string): string {
  return path.join(dataDir, RESYNC_SUMS_FILE);
}

export function bitmapFile(dataDir: string): string {
  return path.join(dataDir, BITMAP_FILE);
}

export function bitmapModeFile(dataDir: string): string {
  return path.join(dataDir, BITMAP_MODE_FILE);
}

export function journalDir(dataDir: string): string {
  return path.join(dataDir, JOURNAL_DIR);
}

/** Where a journal that a new generation let go waits to be removed. */
export function retiredJournalDir(dataDir: string): string {
  return path.join(dataDir, RETIRED_JOURNAL_DIR);
}

export function segmentFileName(firstLsn: number): string {
  return lsnFileName(firstLsn, SEGMENT_EXT);
}

/** The first LSN named by a segment file, or `undefined` for any other file. */
export function parseSegmentFileName(name: string): number | undefined {
  return parseLsnFileName(name, SEGMENT_EXT);
}

export function watchDir(dataDir: string): string {
  return path.join(dataDir, WATCH_DIR);
}

/** The shipped sums of one disk; `diskId` is a checked id (checkId), so it is a safe file name. */
export function watchSumsFile(dataDir: string, diskId: string): string {
  return path.join(dataDir, WATCH_DIR, diskId + SUMS_EXT);
}
