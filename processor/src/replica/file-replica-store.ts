import fsp from 'node:fs/promises';
import { ErrorCode, SrError, fsyncDir, systemErrorCode, type DiskInfo } from '@site-recovery/shared';
import {
  diskImageFile,
  disksDir,
  isTempFileName,
  parseDiskImageName,
  parseIdDirName,
  replicaEntry,
  replicaDir,
  replicasDir,
  stateFile,
} from '../names.js';
import type { PointStoreOptions } from '../points/file-point-store.js';
import { FileReplica, checkDisks, copyDisks, createImages, openImages } from './file-replica.js';
import { exists, finishSwitch, stagedOnly, type SwitchStep } from './layout-switch.js';
import { readReplicaState, writeReplicaState, type ReplicaStateFile } from './replica-state-file.js';
import { COPYING, type Replica, type ReplicaStore } from './replica-store.js';
import { openRetired } from './retired-replica.js';

export interface FileReplicaStoreOptions extends PointStoreOptions {
  /**
   * Writes (and zeroings) up to this many bytes go into the page cache with a synchronous call on the
   * event loop instead of a thread-pool round trip, as the agent does for its source images: at tens
   * of thousands of small records a second the hop costs more than the copy. 0 sends everything
   * through the thread pool. Default 64 KiB.
   */
  readonly inlineWriteMaxBytes?: number;
  /**
   * Test hook: awaited as a disk-layout switch reaches each step (layout-switch.ts). A promise that
   * never settles freezes the switch there, as a crash would; a store opened afterwards on the same
   * directory sees what the crash would leave.
   */
  readonly onSwitchStep?: (step: SwitchStep) => Promise<void> | void;
}

export const DEFAULT_INLINE_WRITE_MAX_BYTES = 64 * 1024;

/**
 * Replicas as local files under `<data-dir>/replicas`, the retired ones under `<data-dir>/retired`
 * (layout in names.ts).
 */
export class FileReplicaStore implements ReplicaStore {
  private readonly o: FileReplicaStoreOptions & { readonly inlineWriteMaxBytes: number };

  constructor(
    readonly dataDir: string,
    options: FileReplicaStoreOptions = {},
  ) {
    this.o = { ...options, inlineWriteMaxBytes: options.inlineWriteMaxBytes ?? DEFAULT_INLINE_WRITE_MAX_BYTES };
  }

  async list(): Promise<string[]> {
    let names: string[];
    try {
      names = await fsp.readdir(replicasDir(this.dataDir));
    } catch (err) {
      if (systemErrorCode(err) !== 'ENOENT') throw err;
      names = [];
    }
    const vms = new Set<string>();
    for (const name of names) {
      const vm = parseIdDirName(name);
      if (vm !== undefined && (await exists(stateFile(replicaDir(this.dataDir, vm))))) vms.add(vm);
    }
    // A disk-layout switch cut short between its two renames: open() finishes it.
    for (const vm of await stagedOnly(this.dataDir, parseIdDirName)) vms.add(vm);
    return [...vms].sort();
  }

  async open(vm: string): Promise<Replica | undefined> {
    const dir = replicaDir(this.dataDir, vm);
    await finishSwitch(this.dataDir, vm);
    const state = await readReplicaState(stateFile(dir));
    if (state === undefined) return undefined;
    if (state.vm !== vm)
      throw new SrError(ErrorCode.STATE_MISMATCH, `replica directory ${dir} holds the state of VM "${state.vm}"`);
    checkDisks(state.disks);
    await removeLeftovers(dir, state.disks);
    const images = await openImages(dir, state, this.o.inlineWriteMaxBytes);
    let retired;
    try {
      retired = await openRetired(this.dataDir, vm, this.o);
    } catch (err) {
      await Promise.all(images.map((i) => i.close()));
      throw err;
    }
    const replica = new FileReplica(this.dataDir, state, images, retired, this.o);
    try {
      await replica.openPoints();
    } catch (err) {
      await replica.close().catch(() => undefined);
      throw err;
    }
    // A crash interrupted the zeroing that starts a replica: finish it before anything is applied.
    if (state.wipePending) await replica.finishWipe();
    return replica;
  }

  async create(vm: string, generation: string, disks: readonly DiskInfo[]): Promise<Replica> {
    checkDisks(disks);
    const dir = replicaDir(this.dataDir, vm);
    if (await exists(stateFile(dir)))
      throw new SrError(ErrorCode.STATE_MISMATCH, `VM "${vm}" already has a replica; open it instead`);
    await fsp.mkdir(disksDir(dir), { recursive: true });
    await fsyncDir(this.dataDir);
    await fsyncDir(replicasDir(this.dataDir));
    const state: ReplicaStateFile = {
      vm,
      generation,
      disks: copyDisks(disks),
      appliedLsn: 0,
      initialSync: COPYING,
      wipePending: true,
    };
    // State first: if the disks are cut short by a crash, open() sees the pending wipe and makes them again.
    await writeReplicaState(stateFile(dir), state);
    const images = createImages(dir, disks, this.o.inlineWriteMaxBytes);
    const replica = new FileReplica(this.dataDir, state, images, await openRetired(this.dataDir, vm, this.o), this.o);
    await replica.openPoints();
    await fsyncDir(disksDir(dir));
    await replica.finishWipe();
    return replica;
  }
}

/** Removes what a crash can leave behind: state temp files and images of a disk layout since replaced. */
async function removeLeftovers(dir: string, disks: readonly DiskInfo[]): Promise<void> {
  const keep = new Set(disks.map((d) => d.id));
  for (const name of await fsp.readdir(dir)) {
    if (isTempFileName(name)) await fsp.rm(replicaEntry(dir, name), { force: true });
  }
  let images: string[] = [];
  try {
    images = await fsp.readdir(disksDir(dir));
  } catch (err) {
    if (systemErrorCode(err) !== 'ENOENT') throw err;
    await fsp.mkdir(disksDir(dir), { recursive: true });
  }
  for (const name of images) {
    const id = parseDiskImageName(name);
    if (id !== undefined && !keep.has(id)) await fsp.rm(diskImageFile(dir, id), { force: true });
  }
}
