import { ErrorCode, SrError, readJsonIfExists, writeFileAtomic } from '@site-recovery/shared';
import { checkpointFile, stateFile } from './names.js';

/** Which VM and disk layout a data directory belongs to. Disk indexes in the journal refer to it. */
export interface AgentState {
  readonly version: 1;
  readonly vm: string;
  readonly disks: readonly { readonly id: string; readonly size: number }[];
}

/**
 * Loads the state of `dataDir`, or records `wanted` in a new one. A directory made for another VM
 * or another disk layout is refused: reusing it would send one VM's journal as another's.
 */
export async function loadOrCreateState(dataDir: string, wanted: AgentState): Promise<AgentState> {
  const file = stateFile(dataDir);
  const found = (await readJsonIfExists(file)) as AgentState | undefined;
  if (found === undefined) {
    await writeFileAtomic(file, JSON.stringify(wanted, null, 2) + '\n');
    return wanted;
  }
  const same =
    found.vm === wanted.vm &&
    found.disks.length === wanted.disks.length &&
    found.disks.every((d, i) => d.id === wanted.disks[i]?.id && d.size === wanted.disks[i]?.size);
  if (!same) {
    throw new SrError(
      ErrorCode.STATE_MISMATCH,
      `data dir ${dataDir} belongs to VM "${found.vm}" with disks ${found.disks.map((d) => `${d.id}(${d.size} B)`).join(', ')}; ` +
        `use a new --data-dir for this VM or disk layout`,
    );
  }
  return found;
}

/** LSN through which every disk image is known to be on stable storage. */
export async function readCheckpoint(dataDir: string): Promise<number> {
  const c = (await readJsonIfExists(checkpointFile(dataDir))) as { lsn?: unknown } | undefined;
  return typeof c?.lsn === 'number' && Number.isSafeInteger(c.lsn) && c.lsn >= 0 ? c.lsn : 0;
}

export async function writeCheckpoint(dataDir: string, lsn: number): Promise<void> {
  await writeFileAtomic(checkpointFile(dataDir), JSON.stringify({ lsn, time: new Date().toISOString() }) + '\n');
}
