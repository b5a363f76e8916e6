import fsp from 'node:fs/promises';
import path from 'node:path';
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
 * While the agent runs, a new generation's journal takes the old one's place in steps, the old one
 * still open (its open files go on working for whoever closes them): first its directory is renamed
 * aside, which needs no space on the disk and marks the switch (a start that finds it begins a new
 * generation); then a new journal is opened in its place. Resolves to false when there was no journal
 * to move (an earlier attempt of the same switch moved it).
 */
export async function retireJournal(dataDir: string): Promise<boolean> {
  try {
    await fsp.rename(journalDir(dataDir), retiredJournalDir(dataDir));
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/** Opens the new generation's journal where the old one was; on failure, removes what it created. */
export async function openNewJournal(dataDir: string, options: FileJournalOptions | undefined): Promise<FileJournal> {
  try {
    return await FileJournal.open(journalDir(dataDir), options);
  } catch (err) {
    await fsp.rm(journalDir(dataDir), { recursive: true, force: true }).catch(() => undefined);
    throw err;
  }
}

/** Puts the retired journal back in place, for an old journal that goes on after a failed attempt. */
export async function restoreRetiredJournal(dataDir: string, log: Logger): Promise<void> {
  try {
    await fsp.rename(retiredJournalDir(dataDir), journalDir(dataDir));
  } catch (err) {
    log.error({ err: (err as Error).message }, 'cannot put the journal back after failing to open a new one');
  }
}

/** Removes the retired journal's files (a closed, failed journal), keeping the directory as the switch's mark. */
export async function emptyRetiredJournal(dataDir: string): Promise<void> {
  const dir = retiredJournalDir(dataDir);
  for (const name of await fsp.readdir(dir)) await fsp.rm(path.join(dir, name), { recursive: true, force: true });
}

/** Whether a switch at run time was under way (a crash interrupted it). */
export async function retiredJournalFound(dataDir: string): Promise<boolean> {
  return (await fsp.stat(retiredJournalDir(dataDir)).catch(() => undefined)) !== undefined;
}

/** Removes what a new generation let go (left over by a crash, or once the old journal is closed). */
export async function removeRetiredJournal(dataDir: string): Promise<void> {
  await fsp.rm(retiredJournalDir(dataDir), { recursive: true, force: true });
}
