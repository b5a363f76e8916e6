import fsp from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { ErrorCode, SerialQueue, SrError, readJsonIfExists, writeFileAtomic } from '@site-recovery/shared';
import { checkpointFile, stateFile } from './names.js';

/** Which VM and disk layout a data directory belongs to. Disk indexes in the journal refer to it. */
export interface AgentState {
  readonly version: 1;
  readonly vm: string;
  readonly disks: readonly { readonly id: string; readonly size: number }[];
  /** Present once replication was enabled: the generation the journal belongs to. */
  readonly replication?: ReplicationState;
  /**
   * `watch`: the agent watches the images another process writes (agent/src/watch/) and the journal
   * holds what its scans shipped. Absent: it fronts the disks over NBD. A generation keeps one mode.
   */
  readonly mode?: 'watch';
}

export interface ReplicationState {
  readonly generation: string;
  /** Bytes of the VM's disks (in disk order) already copied into the stream by the initial copy. */
  readonly copiedBytes: number;
  readonly copyComplete: boolean;
  /**
   * The journal's last LSN when the agent started, kept until the cache-store's position has been
   * checked against the journal (Shipper). Until then the cache-store can rightly hold no LSN past it,
   * save what the running agent shipped itself. Kept across restarts: a journal that lost records in a
   * crash gives their LSNs to new writes, and a second restart before the cache-store answered would
   * otherwise take the new end for the old one.
   */
  readonly unconfirmedFromLsn?: number;
}

/** A new generation id: sortable by creation time, unique without coordination. */
export function newGeneration(): string {
  return `g${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
}

export async function saveState(dataDir: string, state: AgentState): Promise<void> {
  await writeFileAtomic(stateFile(dataDir), JSON.stringify(state, null, 2) + '\n');
}

/**
 * The state of a running agent's data dir. The initial copy and the shipper both change it: saves go
 * one after another, each writing the state as it is when its turn comes, so an older state never
 * lands over a newer one.
 */
export class StateStore {
  private readonly saves = new SerialQueue();

  constructor(
    private readonly dataDir: string,
    private current: AgentState,
  ) {}

  get state(): AgentState {
    return this.current;
  }

  /** Changes the state now and resolves once it (or a later state) is saved. */
  update(change: (state: AgentState) => AgentState): Promise<void> {
    this.current = change(this.current);
    return this.saves.run(() => saveState(this.dataDir, this.current));
  }
}

/**
 * Loads the state of `dataDir`, or records `wanted` in a new one. A directory made for another VM
 * or another disk layout is refused: reusing it would send one VM's journal as another's.
 */
export async function loadOrCreateState(dataDir: string, wanted: AgentState): Promise<AgentState> {
  const file = stateFile(dataDir);
  const found = (await readJsonIfExists(file)) as AgentState | undefined;
  if (found === undefined) {
    await saveState(dataDir, wanted);
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
  await writeFileAtomic(
    checkpointFile(dataDir),
    JSON.stringify({ lsn, time: new Date().toISOString(), bootId: await bootId() }) + '\n',
  );
}

/**
 * Whether the machine restarted since the last checkpoint was written (true when that is unknown).
 * Without a restart the page cache survived the agent's end, so no image write can have outlived the
 * journal record it follows.
 */
export async function restartedSinceCheckpoint(dataDir: string): Promise<boolean> {
  const c = (await readJsonIfExists(checkpointFile(dataDir))) as { bootId?: unknown } | undefined;
  const now = await bootId();
  return now === undefined || c?.bootId !== now;
}

/** Linux's id of the current boot; undefined where there is none to read. */
async function bootId(): Promise<string | undefined> {
  try {
    return (await fsp.readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
  } catch {
    return undefined;
  }
}
