import { ErrorCode, isSrError } from '@site-recovery/shared';
import type { BlockBackend } from '@site-recovery/shared/nbd';
import type { AgentConfig } from './agent-config.js';
import {
  beginGeneration,
  forgetGeneration,
  settleWithoutGeneration,
  loadState,
  readCheckpoint,
  readStopStamps,
  saveState,
  writeCheckpoint,
  type AgentState,
} from './agent-state.js';
import { cleanParts, loadDirtyBitmap, type LoadedBitmap } from './bitmap/bitmap-load.js';
import { DEFAULT_BITMAP_CHUNK_BYTES } from './bitmap/dirty-bitmap.js';
import { diskChange, type DiskFacts } from './generation/disk-identity.js';
import { GenerationCause, type GenerationReason } from './generation/generation-cause.js';
import {
  emptyRetiredJournal,
  freshJournal,
  removeRetiredJournal,
  retiredJournalFound,
} from './generation/journal-retirement.js';
import { FileJournal } from './journal/file-journal.js';
import { redo } from './journal/redo.js';
import { journalDir } from './names.js';
import { forgetWatchMode } from './watch/watch-startup.js';

/** A data dir ready to serve from: the images hold the journal's state through `checkpoint`. */
export interface OpenedDataDir {
  readonly state: AgentState;
  readonly journal: FileJournal;
  readonly checkpoint: number;
  /** The dirty bitmap as the data dir holds it (bitmap mode, agent/src/bitmap/). */
  readonly bitmap: LoadedBitmap | undefined;
}

/**
 * Brings the data dir to where the VM may write: the state checked against the disks found, the
 * journal opened (cutting what a crash left unsynced), its tail redone onto the images, and the
 * replication generation kept, forgotten or begun anew. Every decision here is taken before the VM
 * can write, so none of them races a write.
 *
 * The generation cannot continue, and the journal is let go unreplayed, when the disks are not those
 * it was written for (another layout, another file, another size, written while the agent was
 * stopped: replaying it would put old writes over them), when it is damaged where it was synced, or
 * when a switch decided earlier was interrupted, or when a crash cut records from it (replaying the rest
 * could undo writes the images hold; see replayJournal). It is replayed, then let go, when the operator
 * asks (`--resync`).
 */
export async function openDataDir(
  config: AgentConfig,
  images: readonly BlockBackend[],
  facts: readonly DiskFacts[],
): Promise<OpenedDataDir> {
  const { dataDir, log } = config;
  await forgetWatchMode(dataDir, log);
  const found = await loadState(dataDir, config.vm);
  const disks = facts.map((f) => ({ id: f.id, size: f.size, identity: f.identity }));
  let state: AgentState = { ...(found ?? { version: 1, vm: config.vm }), disks };
  const pending = found?.pendingGeneration;
  let reason: GenerationReason | undefined =
    pending !== undefined ? { cause: pending.cause, message: pending.message } : undefined;
  const interrupted = await retiredJournalFound(dataDir);
  if (interrupted) {
    // A switch at run time that a crash interrupted, perhaps before it could record why (a full disk).
    // The old journal's files go first (the directory stays as the mark until the state says it).
    await emptyRetiredJournal(dataDir);
    reason ??= {
      cause: GenerationCause.SWITCH_INTERRUPTED,
      message: 'a new generation begun while the agent ran was interrupted by a crash',
    };
  }
  if (found !== undefined && reason === undefined) {
    reason = diskChange(found.disks, facts, await readStopStamps(dataDir));
    if (reason !== undefined) log.warn({ cause: reason.cause }, `the disks changed: ${reason.message}`);
  }
  if (reason !== undefined && state.pendingGeneration === undefined) {
    // Recorded before the journal goes: a crash from here on still begins a new generation, and never
    // replays this journal onto disks it was not written for.
    state = forgetGeneration(state, reason);
  }
  await saveState(dataDir, state);
  if (interrupted) await removeRetiredJournal(dataDir); // its mark is in the state now
  let journal: FileJournal | undefined;
  let checkpoint = 0;
  let bitmap: LoadedBitmap | undefined;
  if (reason === undefined) {
    try {
      const replayed = await replayJournal(config, images);
      if (replayed === 'cut') {
        reason = {
          cause: GenerationCause.JOURNAL_LOST_RECORDS,
          message: 'a crash cut records from the journal, so the images may hold writes it lost',
        };
      } else ({ journal, checkpoint, bitmap } = replayed);
    } catch (err) {
      if (!isSrError(err, ErrorCode.JOURNAL_CORRUPT)) throw err;
      reason = { cause: GenerationCause.JOURNAL_DAMAGED, message: err.message };
      log.warn({ err: err.message }, 'the journal is damaged where it was synced: it is let go unreplayed');
    }
    if (reason !== undefined) {
      state = forgetGeneration(state, reason);
      await saveState(dataDir, state);
    }
  }
  try {
    const r = config.replication;
    if (reason === undefined && bitmap?.untrusted !== undefined && r !== undefined) {
      // Which regions bitmap mode wrote is unknown: only a new generation (a copy by difference) proves
      // the replica whole again.
      reason = {
        cause: GenerationCause.BITMAP_UNTRUSTED,
        message: `the dirty bitmap cannot be trusted: ${bitmap.untrusted}`,
      };
    } else if (reason === undefined && r !== undefined && state.replication === undefined) {
      reason = state.nextGenerationReason ?? {
        cause: GenerationCause.NEW_DATA_DIR,
        message: 'the data dir holds no replication generation',
      };
    } else if (reason === undefined && r?.resync === true) {
      reason = { cause: GenerationCause.OPERATOR, message: 'the agent was started with --resync' };
    }
    if (reason === undefined) {
      if (r !== undefined && state.replication!.unconfirmedFromLsn === undefined) {
        // Recorded before the VM can write, and kept until the cache-store's position is checked.
        state = { ...state, replication: { ...state.replication!, unconfirmedFromLsn: journal!.lastLsn } };
        await saveState(dataDir, state);
      }
      return { state, journal: journal!, checkpoint, bitmap };
    }
    if (r === undefined) {
      // Not replicating this time: the journal is kept unless it cannot serve these disks, and the
      // generation is forgotten, so that the next start with a cache-store begins a new one.
      ({ state, journal, checkpoint } = await withoutGeneration(config, state, reason, journal));
      return { state, journal, checkpoint, bitmap: undefined };
    }
    // A new generation: the stream restarts at LSN 1 with a copy of the disks, so the old journal
    // (redone onto the images above, or unfit for them) has nothing left to give.
    await journal?.close();
    journal = undefined;
    if (state.pendingGeneration === undefined) {
      state = forgetGeneration(state, reason);
      await saveState(dataDir, state);
    }
    journal = await freshJournal(dataDir, config.journal);
    await writeCheckpoint(dataDir, 0);
    state = beginGeneration(state, reason);
    await saveState(dataDir, state);
    log.warn(
      { generation: state.replication!.generation, cause: reason.cause },
      `starting a new replication generation: ${reason.message}`,
    );
    return { state, journal, checkpoint: 0, bitmap: undefined };
  } catch (err) {
    await journal?.close().catch(() => undefined);
    throw err;
  }
}

/**
 * Opens the journal, cutting a crash's unsynced tail, and redoes it onto the images; resolves to 'cut'
 * (the journal closed, nothing replayed) when it had to cut records.
 *
 * Redo is idempotent only while the journal reaches every write the images hold. A cut breaks that:
 * the images may hold the cut records' writes (the kernel wrote an image page back before the journal
 * page of its record, or records the images already held were damaged afterwards), and replaying the
 * older records before them would put earlier data back over those writes: a 1 MiB ZERO record of the
 * initial copy would zero a block the VM wrote since, acknowledged and later covered by a FLUSH. So
 * nothing is replayed. What that leaves out was never acknowledged (a write is answered once its image
 * write is done), and a FLUSH synced the images, so the images are a state the VM's crash may leave;
 * but the journal no longer describes them, and only a new generation (a copy of the images) or a
 * journal started over follows.
 */
async function replayJournal(
  config: AgentConfig,
  images: readonly BlockBackend[],
): Promise<{ journal: FileJournal; checkpoint: number; bitmap: LoadedBitmap | undefined } | 'cut'> {
  const { dataDir, log } = config;
  // Everything through the checkpoint was synced before it was written: damage after it can be
  // the unsynced tail of a crash, which the journal cuts rather than refusing to open.
  const journal = await FileJournal.open(journalDir(dataDir), {
    ...config.journal,
    syncedThroughLsn: await readCheckpoint(dataDir),
  });
  try {
    for (const repair of journal.repairs) log.warn({ repair }, 'journal: cut what a crash left unsynced');
    if (journal.repairs.length > 0) {
      await journal.close();
      return 'cut';
    }
    // Before redo: replaying a record where bitmap mode wrote later would undo that write. A bitmap
    // that cannot be trusted marks every region dirty, so nothing is replayed.
    const bitmap = await loadDirtyBitmap(
      dataDir,
      images.map((i) => i.size),
      config.bitmap?.chunkBytes ?? DEFAULT_BITMAP_CHUNK_BYTES,
      log,
    );
    const checkpoint = await redo(
      dataDir,
      journal,
      images,
      log,
      bitmap !== undefined ? (disk, offset, length) => cleanParts(bitmap, disk, offset, length) : undefined,
    );
    return { journal, checkpoint, bitmap };
  } catch (err) {
    await journal.close().catch(() => undefined);
    throw err;
  }
}

/**
 * An agent starting without a cache-store after continuity was lost: the generation (if any) is
 * forgotten, with `reason` kept for the next replicated start; the journal stays when it was replayed
 * (it still rebuilds these images with `sr-journal replay`), and starts over when it was not.
 */
async function withoutGeneration(
  config: AgentConfig,
  state: AgentState,
  reason: GenerationReason,
  journal: FileJournal | undefined,
): Promise<{ state: AgentState; journal: FileJournal; checkpoint: number }> {
  const { dataDir, log } = config;
  let fresh: FileJournal | undefined;
  if (journal === undefined) {
    // Before the pending generation is settled: until this journal exists, a crash must start it over again.
    fresh = await freshJournal(dataDir, config.journal);
    await writeCheckpoint(dataDir, 0);
  }
  const next = settleWithoutGeneration(state, reason);
  await saveState(dataDir, next);
  log.warn(
    { cause: reason.cause },
    next.nextGenerationReason !== undefined
      ? `${reason.message}: the next start with a cache-store begins a new replication generation`
      : `${reason.message}${journal === undefined ? ': the journal starts over' : ''}`,
  );
  return journal !== undefined
    ? { state: next, journal, checkpoint: journal.lastLsn }
    : { state: next, journal: fresh!, checkpoint: 0 };
}
