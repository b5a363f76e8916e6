import fsp from 'node:fs/promises';
import { ErrorCode, SrError, readJsonIfExists, type Logger } from '@site-recovery/shared';
import {
  newGeneration,
  readCheckpoint,
  restartedSinceCheckpoint,
  saveState,
  writeCheckpoint,
  type AgentState,
} from '../agent-state.js';
import { FileJournal } from '../journal/file-journal.js';
import { checkpointFile, journalDir, stateFile, watchDir } from '../names.js';
import type { WatchAgentConfig } from './watch-config.js';

/** A watch-mode data dir ready to scan into: its state (with a generation) and its journal. */
export interface OpenedWatchDir {
  readonly state: AgentState & { readonly replication: NonNullable<AgentState['replication']> };
  readonly journal: FileJournal;
  /** Why a new generation began, when one did. */
  readonly newGeneration?: string;
}

/**
 * Opens the data dir of a watch-mode agent. Nothing is redone onto the images: another process owns
 * them, and the journal only holds what scans read of them to ship. The generation is kept when the
 * data dir was last used in watch mode for the same disks; otherwise (a first start, `--resync`, a disk
 * resized or the disks changed, a data dir last used in NBD mode, a journal that lost records in a
 * machine crash) a new one begins with an empty journal and empty sums, so the first scan sends every
 * block. `sizes` are the images' sizes now, in disk order.
 */
export async function openWatchDataDir(
  config: WatchAgentConfig,
  sizes: readonly number[],
  resync: string | undefined,
): Promise<OpenedWatchDir> {
  const { dataDir, log } = config;
  await fsp.mkdir(dataDir, { recursive: true });
  const disks = config.disks.map((d, i) => ({ id: d.id, size: sizes[i]! }));
  const found = (await readJsonIfExists(stateFile(dataDir))) as AgentState | undefined;
  if (found !== undefined && found.vm !== config.vm) {
    throw new SrError(
      ErrorCode.STATE_MISMATCH,
      `data dir ${dataDir} belongs to VM "${found.vm}"; use a new --data-dir for VM "${config.vm}"`,
    );
  }
  let journal = await FileJournal.open(journalDir(dataDir), {
    ...config.journal,
    syncedThroughLsn: await readCheckpoint(dataDir),
  });
  try {
    for (const repair of journal.repairs) log.warn({ repair }, 'journal: cut what a crash left unsynced');
    const why =
      resync ??
      (found === undefined
        ? 'a new data dir'
        : found.mode !== 'watch'
          ? 'the data dir was last used in NBD mode'
          : found.replication === undefined
            ? 'the data dir has no replication generation'
            : changedLayout(found.disks, disks)) ??
      (journal.repairs.length > 0 && (await restartedSinceCheckpoint(dataDir))
        ? 'the journal lost records in a machine crash, so the cache-store may hold records it no longer has'
        : undefined);
    if (why === undefined) return { state: await confirmFrom(dataDir, found!, journal), journal };
    await journal.close();
    // The old generation's unshipped records are superseded by the new one's full first scan.
    await fsp.rm(journalDir(dataDir), { recursive: true, force: true });
    await fsp.rm(watchDir(dataDir), { recursive: true, force: true });
    journal = await FileJournal.open(journalDir(dataDir), config.journal);
    await writeCheckpoint(dataDir, 0);
    const generation = newGeneration();
    const state = {
      version: 1 as const,
      vm: config.vm,
      disks,
      mode: 'watch' as const,
      replication: { generation, copiedBytes: 0, copyComplete: false, unconfirmedFromLsn: 0 },
    };
    await saveState(dataDir, state);
    log.info({ generation, why }, 'watch: new replication generation; the first scan sends every block');
    return { state, journal, newGeneration: why };
  } catch (err) {
    await journal.close().catch(() => undefined);
    throw err;
  }
}

/** Why the disks no longer match the generation's layout, or `undefined` when they do. */
function changedLayout(
  was: readonly { id: string; size: number }[],
  now: readonly { id: string; size: number }[],
): string | undefined {
  if (was.length !== now.length || was.some((d, i) => d.id !== now[i]!.id))
    return `the disks changed from ${was.map((d) => d.id).join(', ')} to ${now.map((d) => d.id).join(', ')}`;
  const resized = now.find((d, i) => d.size !== was[i]!.size);
  if (resized === undefined) return undefined;
  const from = was.find((d) => d.id === resized.id)!.size;
  return `disk ${resized.id} was resized from ${from} to ${resized.size} bytes`;
}

/** Records where the journal ends before any scan, until the cache-store's position is checked (see Shipper). */
async function confirmFrom(dataDir: string, state: AgentState, journal: FileJournal): Promise<OpenedWatchDir['state']> {
  const rep = state.replication!;
  if (rep.unconfirmedFromLsn !== undefined) return { ...state, replication: rep };
  const next = { ...state, replication: { ...rep, unconfirmedFromLsn: journal.lastLsn } };
  await saveState(dataDir, next);
  return next;
}

/**
 * Called by an NBD agent before it reads its data dir: one last used in watch mode is forgotten whole.
 * Its journal holds copies of blocks another process wrote, read at scan time; redone onto the images it
 * would write old data over newer. Its generation goes too (a watch generation's replica does not follow
 * this VM's write order), so replication begins a new one with a full copy.
 */
export async function forgetWatchMode(dataDir: string, log: Logger): Promise<void> {
  const found = (await readJsonIfExists(stateFile(dataDir))) as AgentState | undefined;
  if (found?.mode !== 'watch') return;
  await fsp.rm(journalDir(dataDir), { recursive: true, force: true });
  await fsp.rm(watchDir(dataDir), { recursive: true, force: true });
  await fsp.rm(checkpointFile(dataDir), { force: true });
  await fsp.rm(stateFile(dataDir), { force: true });
  log.warn(
    { dataDir },
    'the data dir was last used in watch mode: its journal and generation are dropped; replication begins a new generation',
  );
}
