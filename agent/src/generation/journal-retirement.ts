import fsp from 'node:fs/promises';
import type { Logger } from '@site-recovery/shared';
import { FileJournal, type FileJournalOptions } from '../journal/file-journal.js';
import { journalDir, retiredJournalDir } from '../names.js';

/**
 * A journal for a new generation, empty from LSN 1, in place of the data dir's journal, which is
 * removed first (at start, with nothing open on it).
 */
export async function freshJournal(dataDir: string, options: FileJournalOptions | undefined): Promise<FileJournal> {
  await fsp.rm(journalDir(dataDir), { recursive: true, force: true });
  return FileJournal.open(journalDir(dataDir), options);
}

/**
 * The same while the agent runs, with the old journal still open: its directory is renamed aside
 * (its open files go on working for whoever closes them) and a new journal opened in its place. If the
 * new one cannot be opened, the old directory is put back, so the old journal goes on as it was.
 * Removing the renamed directory is {@link removeRetiredJournal}'s, once the old journal is closed.
 */
export async function replaceJournal(
  dataDir: string,
  options: FileJournalOptions | undefined,
  log: Logger,
): Promise<FileJournal> {
  const dir = journalDir(dataDir);
  const retired = retiredJournalDir(dataDir);
  await fsp.rm(retired, { recursive: true, force: true });
  await fsp.rename(dir, retired);
  try {
    return await FileJournal.open(dir, options);
  } catch (err) {
    try {
      await fsp.rm(dir, { recursive: true, force: true });
      await fsp.rename(retired, dir);
    } catch (back) {
      log.error({ err: (back as Error).message }, 'cannot put the journal back after failing to open a new one');
    }
    throw err;
  }
}

/** Removes what a new generation let go (left over by a crash, or once the old journal is closed). */
export async function removeRetiredJournal(dataDir: string): Promise<void> {
  await fsp.rm(retiredJournalDir(dataDir), { recursive: true, force: true });
}
