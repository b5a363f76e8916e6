import path from 'node:path';
import { lsnFileName, parseLsnFileName } from '@site-recovery/shared';

/**
 * Every name the agent gives a file in its data directory is built and parsed here, and nowhere else.
 *
 * <data-dir>/
 *   agent-state.json          VM name and disk layout the directory belongs to
 *   checkpoint.json           LSN through which the images are known to be on stable storage
 *   group-term.json           the highest replication-group term this member has seen (group/term-store.ts)
 *   journal/
 *     0000000000000001.srj    segment whose first record has LSN 1 (16 hex digits)
 *   journal.retired/          the journal a new generation let go, removed once closed (and at start)
 */
const STATE_FILE = 'agent-state.json';
const CHECKPOINT_FILE = 'checkpoint.json';
const GROUP_TERM_FILE = 'group-term.json';
const JOURNAL_DIR = 'journal';
const RETIRED_JOURNAL_DIR = 'journal.retired';
const SEGMENT_EXT = 'srj';

export function stateFile(dataDir: string): string {
  return path.join(dataDir, STATE_FILE);
}

export function checkpointFile(dataDir: string): string {
  return path.join(dataDir, CHECKPOINT_FILE);
}

export function groupTermFile(dataDir: string): string {
  return path.join(dataDir, GROUP_TERM_FILE);
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
