import fsp from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { ErrorCode, SerialQueue, SrError, readJsonIfExists, writeFileAtomic } from '@site-recovery/shared';
import type { DiskIdentity, DiskStamp } from './generation/disk-identity.js';
import { withRecord, type GenerationReason, type GenerationRecord } from './generation/generation-cause.js';
import { checkpointFile, stateFile } from './names.js';

/** Which VM and disk layout a data directory belongs to. Disk indexes in the journal refer to it. */
export interface AgentState {
  readonly version: 1;
  readonly vm: string;
  readonly disks: readonly StateDisk[];
  /** Present once replication was enabled: the generation the journal belongs to. */
  readonly replication?: ReplicationState;
  /**
   * `watch`: the agent watches the images another process writes (agent/src/watch/) and the journal
   * holds what its scans shipped. Absent: it fronts the disks over NBD. A generation keeps one mode.
   */
  readonly mode?: 'watch';
  /** The generations this data dir began, newest first (at most GENERATION_HISTORY). */
  readonly generations?: readonly GenerationRecord[];
  /**
   * A new generation was decided and is not begun yet (a switch at run time that a crash or a
   * failure interrupted): the next start begins it, for this reason, whatever else it finds.
   */
  readonly pendingGeneration?: GenerationReason & { readonly at: string };
  /**
   * Why the next start with a cache-store begins a generation, when the last one was forgotten by an agent
   * running without one (its journal went on, or started over, for these disks): the reason shown then.
   */
  readonly nextGenerationReason?: GenerationReason;
}

export interface StateDisk {
  readonly id: string;
  readonly size: number;
  /** Which file the image was when the data dir last opened it (absent in data dirs from before). */
  readonly identity?: DiskIdentity;
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

/**
 * `state` with a new generation begun for `reason`: nothing copied yet, and the cache-store may hold
 * nothing of it past what this agent ships (`unconfirmedFromLsn` 0), so a restart before the first
 * welcome still checks the position. Any pending generation is the one begun here.
 */
export function beginGeneration(state: AgentState, reason: GenerationReason): AgentState {
  const id = newGeneration();
  const record: GenerationRecord = { id, startedAt: new Date().toISOString(), ...reason };
  return {
    version: state.version,
    vm: state.vm,
    disks: state.disks,
    replication: { generation: id, copiedBytes: 0, copyComplete: false, unconfirmedFromLsn: 0 },
    generations: withRecord(state.generations, record),
  };
}

/**
 * `state` without a generation, remembering `reason` as pending: the next replicated start (or the
 * switch under way) begins one, and never continues the journal. Saved before the journal is let go, so
 * that no crash can leave a generation naming a journal that no longer continues it.
 */
export function forgetGeneration(state: AgentState, reason: GenerationReason): AgentState {
  return { ...withoutGeneration(state), pendingGeneration: { ...reason, at: new Date().toISOString() } };
}

/**
 * `state` once an agent without a cache-store has dealt with its journal for `reason` (kept it, or started
 * it over): nothing is pending any more; a data dir that ever began a generation remembers `reason` for
 * the next replicated start, which begins one.
 */
export function settleWithoutGeneration(state: AgentState, reason: GenerationReason): AgentState {
  const ever = (state.generations?.length ?? 0) > 0 || state.replication !== undefined;
  return { ...withoutGeneration(state), ...(ever ? { nextGenerationReason: reason } : {}) };
}

function withoutGeneration(state: AgentState): AgentState {
  return {
    version: state.version,
    vm: state.vm,
    disks: state.disks,
    ...(state.generations !== undefined ? { generations: state.generations } : {}),
  };
}

export async function saveState(dataDir: string, state: AgentState): Promise<void> {
  await writeFileAtomic(stateFile(dataDir), JSON.stringify(state, null, 2) + '\n');
}

interface HeldState {
  readonly dataDir: string;
  current: AgentState;
  readonly saves: SerialQueue;
}

/**
 * The state of a running agent's data dir. The initial copy and the shipper both change it: saves go
 * one after another, each writing the state as it is when its turn comes, so an older state never
 * lands over a newer one.
 */
export class StateStore {
  private held: HeldState;
  /** Set on a view for one generation's parts ({@link forGeneration}). */
  private generation: string | undefined;

  constructor(dataDir: string, state: AgentState) {
    this.held = { dataDir, current: state, saves: new SerialQueue() };
  }

  /**
   * A view of the same state for the parts of generation `generation` (its initial copy, its
   * shipper): once another generation has begun, their late changes (a copy's last progress) are
   * dropped instead of landing in the new generation's state.
   */
  forGeneration(generation: string): StateStore {
    const view = new StateStore(this.held.dataDir, this.held.current);
    view.held = this.held;
    view.generation = generation;
    return view;
  }

  get state(): AgentState {
    return this.held.current;
  }

  /** Changes the state now and resolves once it (or a later state) is saved. */
  update(change: (state: AgentState) => AgentState): Promise<void> {
    const held = this.held;
    if (this.generation !== undefined && held.current.replication?.generation !== this.generation)
      return Promise.resolve();
    held.current = change(held.current);
    return held.saves.run(() => saveState(held.dataDir, held.current));
  }

  /** Replaces the state (a generation begun or forgotten) and resolves once it is saved. */
  replace(state: AgentState): Promise<void> {
    return this.update(() => state);
  }
}

/**
 * Loads the state of `dataDir` (undefined when it has none). A directory made for another VM is
 * refused: reusing it would send one VM's journal as another's. Its disks are compared by the caller
 * (a change begins a new generation).
 */
export async function loadState(dataDir: string, vm: string): Promise<AgentState | undefined> {
  const found = (await readJsonIfExists(stateFile(dataDir))) as AgentState | undefined;
  if (found !== undefined && found.vm !== vm) {
    throw new SrError(
      ErrorCode.STATE_MISMATCH,
      `data dir ${dataDir} belongs to VM "${found.vm}" with disks ${found.disks.map((d) => `${d.id}(${d.size} B)`).join(', ')}; ` +
        `use another --data-dir for VM "${vm}"`,
    );
  }
  return found;
}

interface CheckpointDoc {
  readonly lsn?: unknown;
  readonly bootId?: unknown;
  readonly images?: unknown;
}

/** LSN through which every disk image is known to be on stable storage. */
export async function readCheckpoint(dataDir: string): Promise<number> {
  const c = (await readJsonIfExists(checkpointFile(dataDir))) as CheckpointDoc | undefined;
  return typeof c?.lsn === 'number' && Number.isSafeInteger(c.lsn) && c.lsn >= 0 ? c.lsn : 0;
}

/**
 * Writes the checkpoint. `images` is given only by the last checkpoint of a clean stop, after the
 * images' last write: how each image looked then, so the next start can tell whether anything wrote
 * an image while the agent was stopped. Any later checkpoint drops it.
 */
export async function writeCheckpoint(dataDir: string, lsn: number, images?: readonly DiskStamp[]): Promise<void> {
  const doc = { lsn, time: new Date().toISOString(), bootId: await bootId(), ...(images ? { images } : {}) };
  await writeFileAtomic(checkpointFile(dataDir), JSON.stringify(doc) + '\n');
}

/** The images as a clean stop left them (see {@link writeCheckpoint}); undefined after a crash or before. */
export async function readStopStamps(dataDir: string): Promise<readonly DiskStamp[] | undefined> {
  const c = (await readJsonIfExists(checkpointFile(dataDir))) as CheckpointDoc | undefined;
  const images = c?.images;
  if (!Array.isArray(images)) return undefined;
  const ok = images.every(
    (i: unknown) =>
      typeof i === 'object' &&
      i !== null &&
      typeof (i as DiskStamp).size === 'number' &&
      typeof (i as DiskStamp).mtimeNs === 'string',
  );
  return ok ? (images as DiskStamp[]) : undefined;
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
