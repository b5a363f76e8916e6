import fsp from 'node:fs/promises';
import type { BlockBackend } from '@site-recovery/shared/nbd';
import type { AgentConfig } from './agent-config.js';
import {
  loadOrCreateState,
  newGeneration,
  readCheckpoint,
  restartedSinceCheckpoint,
  saveState,
  writeCheckpoint,
  type AgentState,
} from './agent-state.js';
import { cleanParts, loadDirtyBitmap, type LoadedBitmap } from './bitmap/bitmap-load.js';
import { DEFAULT_BITMAP_CHUNK_BYTES } from './bitmap/dirty-bitmap.js';
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
 * Brings the data dir to where the VM may write: the state checked against the configured disks, the
 * journal opened (cutting what a crash left unsynced), its tail redone onto the images, and the
 * replication generation kept, forgotten or begun anew. Every decision here is taken before the VM
 * can write, so none of them races a write.
 */
export async function openDataDir(config: AgentConfig, images: readonly BlockBackend[]): Promise<OpenedDataDir> {
  const { dataDir, log } = config;
  await forgetWatchMode(dataDir, log);
  let state = await loadOrCreateState(dataDir, {
    version: 1,
    vm: config.vm,
    disks: config.disks.map((d, i) => ({ id: d.id, size: images[i]!.size })),
  });
  // Everything through the checkpoint was synced before it was written: damage after it can be
  // the unsynced tail of a crash, which the journal cuts rather than refusing to open.
  let journal = await FileJournal.open(journalDir(dataDir), {
    ...config.journal,
    syncedThroughLsn: await readCheckpoint(dataDir),
  });
  try {
    for (const repair of journal.repairs) log.warn({ repair }, 'journal: cut what a crash left unsynced');
    // After the machine crashed, a cut journal cannot prove the stream continuous: the kernel may have
    // written an image page back before the journal page of its record. (After the agent alone died
    // the page cache survived, and a cut group never reached the images: they are written after it.)
    // Asked before redo, which writes a new checkpoint.
    const lostRecords =
      journal.repairs.length > 0 && state.replication !== undefined && (await restartedSinceCheckpoint(dataDir));
    // Before redo: replaying a record where bitmap mode wrote later would undo that write.
    const bitmap = await loadDirtyBitmap(
      dataDir,
      images.map((i) => i.size),
      config.bitmap?.chunkBytes ?? DEFAULT_BITMAP_CHUNK_BYTES,
      log,
    );
    let checkpoint = await redo(
      dataDir,
      journal,
      images,
      log,
      bitmap !== undefined ? (disk, offset, length) => cleanParts(bitmap, disk, offset, length) : undefined,
    );
    if (lostRecords && config.replication !== undefined) {
      log.warn(
        'the journal lost records in a crash, so the replica may lack writes the images hold: starting a new replication generation',
      );
    } else if (lostRecords) {
      // Not replicating this time: forget the generation, so the next start with a cache-store begins a new one.
      log.warn(
        'the journal lost records in a crash: the next start with a cache-store begins a new replication generation',
      );
      state = { version: state.version, vm: state.vm, disks: state.disks };
      await saveState(dataDir, state);
    }
    const r = config.replication;
    if (r !== undefined && (state.replication === undefined || r.resync === true || lostRecords)) {
      // A new generation: the stream restarts at LSN 1 with a full copy of the disks, so the old
      // journal (already redone onto the images above) has nothing left to give.
      await journal.close();
      await fsp.rm(journalDir(dataDir), { recursive: true, force: true });
      journal = await FileJournal.open(journalDir(dataDir), config.journal);
      await writeCheckpoint(dataDir, 0);
      checkpoint = 0;
      const generation = newGeneration();
      state = { ...state, replication: { generation, copiedBytes: 0, copyComplete: false } };
      await saveState(dataDir, state);
      log.info({ generation }, 'new replication generation: the disks will be copied in full');
    }
    if (r !== undefined && state.replication !== undefined && state.replication.unconfirmedFromLsn === undefined) {
      // Recorded before the VM can write, and kept until the cache-store's position is checked.
      state = { ...state, replication: { ...state.replication, unconfirmedFromLsn: journal.lastLsn } };
      await saveState(dataDir, state);
    }
    return { state, journal, checkpoint, bitmap };
  } catch (err) {
    await journal.close().catch(() => undefined);
    throw err;
  }
}
