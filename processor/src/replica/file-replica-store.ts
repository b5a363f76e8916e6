import fsp from 'node:fs/promises';
import {
  ErrorCode,
  RecordKind,
  isMarkerKind,
  SerialQueue,
  SrError,
  checkId,
  fsyncDir,
  systemErrorCode,
  type ChangeRecord,
  type DiskInfo,
} from '@site-recovery/shared';
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
import { FilePointStore, type PointStoreOptions } from '../points/file-point-store.js';
import { ReplicaImage } from './replica-image.js';
import { readReplicaState, writeReplicaState, type ReplicaStateFile } from './replica-state-file.js';
import {
  COPYING,
  sameDisks,
  type Replica,
  type ReplicaInfo,
  type ReplicaPosition,
  type ReplicaStore,
} from './replica-store.js';

export interface FileReplicaStoreOptions extends PointStoreOptions {
  /**
   * Writes (and zeroings) up to this many bytes go into the page cache with a synchronous call on the
   * event loop instead of a thread-pool round trip, as the agent does for its source images: at tens
   * of thousands of small records a second the hop costs more than the copy. 0 sends everything
   * through the thread pool. Default 64 KiB.
   */
  readonly inlineWriteMaxBytes?: number;
}

export const DEFAULT_INLINE_WRITE_MAX_BYTES = 64 * 1024;

/** Replicas as local files under `<data-dir>/replicas` (layout in names.ts). */
export class FileReplicaStore implements ReplicaStore {
  private readonly inlineMax: number;

  constructor(
    readonly dataDir: string,
    private readonly options: FileReplicaStoreOptions = {},
  ) {
    this.inlineMax = options.inlineWriteMaxBytes ?? DEFAULT_INLINE_WRITE_MAX_BYTES;
  }

  async list(): Promise<string[]> {
    let names: string[];
    try {
      names = await fsp.readdir(replicasDir(this.dataDir));
    } catch (err) {
      if (systemErrorCode(err) === 'ENOENT') return [];
      throw err;
    }
    const vms: string[] = [];
    for (const name of names.sort()) {
      const vm = parseIdDirName(name);
      if (vm !== undefined && (await exists(stateFile(replicaDir(this.dataDir, vm))))) vms.push(vm);
    }
    return vms;
  }

  async open(vm: string): Promise<Replica | undefined> {
    const dir = replicaDir(this.dataDir, vm);
    const state = await readReplicaState(stateFile(dir));
    if (state === undefined) return undefined;
    if (state.vm !== vm)
      throw new SrError(ErrorCode.STATE_MISMATCH, `replica directory ${dir} holds the state of VM "${state.vm}"`);
    checkDisks(state.disks);
    await removeLeftovers(dir, state.disks);
    // A replica that holds no applied data yet may have been cut short while its disks were being made.
    const repair = state.appliedLsn === 0 || state.wipePending;
    const images: ReplicaImage[] = [];
    try {
      for (const d of state.disks)
        images.push(ReplicaImage.open(diskImageFile(dir, d.id), d.size, this.inlineMax, repair));
    } catch (err) {
      await Promise.all(images.map((i) => i.close()));
      throw err;
    }
    const replica = new FileReplica(dir, state, images, this.inlineMax);
    try {
      await replica.openPoints(this.options);
    } catch (err) {
      await replica.close();
      throw err;
    }
    // A crash interrupted the zeroing that starts a generation: finish it before anything is applied.
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
    const replica = new FileReplica(dir, state, createImages(dir, disks, this.inlineMax), this.inlineMax);
    await replica.openPoints(this.options);
    await fsyncDir(disksDir(dir));
    await replica.finishWipe();
    return replica;
  }
}

class FileReplica implements Replica {
  readonly vm: string;
  /** State file changes, in call order. */
  private readonly stateWrites = new SerialQueue();
  private view: ReplicaInfo;
  private pointStore: FilePointStore | undefined;

  constructor(
    private readonly dir: string,
    private state: ReplicaStateFile,
    private images: ReplicaImage[],
    private readonly inlineMax: number,
  ) {
    this.vm = state.vm;
    this.view = infoOf(state);
  }

  info(): ReplicaInfo {
    return this.view;
  }

  get points(): FilePointStore {
    if (this.pointStore === undefined)
      throw new SrError(ErrorCode.INTERNAL, `points of ${this.vm} used before they were opened`);
    return this.pointStore;
  }

  async openPoints(o: PointStoreOptions): Promise<void> {
    this.pointStore = await FilePointStore.open(
      this.dir,
      {
        disks: () => this.state.disks,
        file: (i) => this.images[i]?.file ?? '',
        read: (disk, offset, length) => this.read(disk, offset, length),
      },
      o,
    );
  }

  locate(index: number): string {
    return this.images[index]?.file ?? '';
  }

  apply(r: ChangeRecord): Promise<void> | undefined {
    if (isMarkerKind(r.kind)) return undefined; // markers: change no data
    const image = this.images[r.disk];
    if (image === undefined || r.offset < 0 || r.offset + r.length > image.size) {
      throw new SrError(
        ErrorCode.BOUNDS,
        `record ${r.lsn}: bytes ${r.offset}+${r.length} of disk index ${r.disk} are outside the replica of ${this.vm}`,
      );
    }
    return this.put(image, r);
  }

  /**
   * The one place replica bytes change. Copy-on-write for recovery points goes here: before a range
   * is first overwritten after a point, its old bytes go to that point's undo log, durably.
   */
  private put(image: ReplicaImage, r: ChangeRecord): Promise<void> | undefined {
    // Write-ahead: the caller ran `points.protect` for this record's batch; refuse rather than
    // silently corrupt every recovery point if it did not.
    this.pointStore?.checkProtected(r, this.state.generation);
    switch (r.kind) {
      case RecordKind.WRITE:
        if (r.data?.length !== r.length)
          throw new SrError(ErrorCode.PROTOCOL, `record ${r.lsn}: write payload does not match its length`);
        return image.write(r.offset, r.data);
      case RecordKind.ZERO:
      case RecordKind.TRIM:
        // Trimmed ranges read back as zeroes so that source and replica agree byte for byte.
        return image.zero(r.offset, r.length);
      default:
        return undefined; // markers change no data
    }
  }

  read(disk: number, offset: number, length: number): Promise<Buffer> {
    const image = this.images[disk];
    if (image === undefined || offset < 0 || offset + length > image.size) {
      return Promise.reject(
        new SrError(
          ErrorCode.BOUNDS,
          `bytes ${offset}+${length} of disk index ${disk} are outside the replica of ${this.vm}`,
        ),
      );
    }
    return image.read(offset, length);
  }

  async flush(): Promise<void> {
    await Promise.all(this.images.map((i) => i.flush()));
  }

  savePosition(p: ReplicaPosition): Promise<void> {
    if (this.state.wipePending)
      return Promise.reject(
        new SrError(ErrorCode.STATE_MISMATCH, `replica of ${this.vm} is being zeroed for a new generation`),
      );
    return this.persist((s) => ({ ...s, appliedLsn: p.appliedLsn, initialSync: { ...p.initialSync } }));
  }

  /**
   * The new generation and the pending wipe are persisted first, then the disks are zeroed (or
   * replaced, for another layout), then the wipe is marked done; open() finishes an interrupted one.
   */
  async reset(generation: string, disks: readonly DiskInfo[]): Promise<void> {
    checkDisks(disks);
    const before = this.state.disks;
    // The wipe overwrites every block: points of the old generation keep what it destroys, unless the
    // layout changes, which no undo log can describe.
    if (sameDisks(before, disks)) await this.points.protectAll();
    else await this.points.discardAll();
    await this.persist((s) => ({
      ...s,
      generation,
      disks: copyDisks(disks),
      appliedLsn: 0,
      initialSync: COPYING,
      wipePending: true,
    }));
    if (!sameDisks(before, disks)) {
      const old = this.images;
      this.images = [];
      await Promise.all(old.map((i) => i.close()));
      await Promise.all(before.map((d) => fsp.rm(diskImageFile(this.dir, d.id), { force: true })));
      this.images = createImages(this.dir, disks, this.inlineMax);
      await fsyncDir(disksDir(this.dir));
    }
    await this.finishWipe();
  }

  /** Zeroes every disk durably, then clears the pending wipe. */
  async finishWipe(): Promise<void> {
    await Promise.all(this.images.map((i) => i.wipe()));
    await this.persist((s) => ({ ...s, wipePending: false }));
  }

  async close(): Promise<void> {
    await this.stateWrites.idle();
    await this.pointStore?.close();
    const images = this.images;
    this.images = [];
    await Promise.all(images.map((i) => i.close()));
  }

  /** Writes one state change after the ones before it; `info()` shows it once it is on disk. */
  private persist(change: (s: ReplicaStateFile) => ReplicaStateFile): Promise<void> {
    return this.stateWrites.run(async () => {
      const next = change(this.state);
      await writeReplicaState(stateFile(this.dir), next);
      this.state = next;
      this.view = infoOf(next);
    });
  }
}

function checkDisks(disks: readonly DiskInfo[]): void {
  if (disks.length === 0) throw new SrError(ErrorCode.BAD_DISK, 'a replica needs at least one disk');
  const seen = new Set<string>();
  for (const d of disks) {
    checkId('disk id', d.id);
    if (seen.has(d.id)) throw new SrError(ErrorCode.BAD_DISK, `disk id "${d.id}" appears twice`);
    if (!Number.isSafeInteger(d.size) || d.size <= 0)
      throw new SrError(ErrorCode.BAD_DISK, `disk "${d.id}" has unusable size ${d.size}`);
    seen.add(d.id);
  }
}

function infoOf(s: ReplicaStateFile): ReplicaInfo {
  return { vm: s.vm, generation: s.generation, disks: s.disks, appliedLsn: s.appliedLsn, initialSync: s.initialSync };
}

function copyDisks(disks: readonly DiskInfo[]): DiskInfo[] {
  return disks.map((d) => ({ id: d.id, size: d.size }));
}

function createImages(dir: string, disks: readonly DiskInfo[], inlineMax: number): ReplicaImage[] {
  const images: ReplicaImage[] = [];
  for (const d of disks) images.push(ReplicaImage.create(diskImageFile(dir, d.id), d.size, inlineMax));
  return images;
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

async function exists(file: string): Promise<boolean> {
  try {
    await fsp.access(file);
    return true;
  } catch {
    return false;
  }
}
