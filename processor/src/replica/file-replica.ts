import fsp from 'node:fs/promises';
import {
  ErrorCode,
  RecordKind,
  isMarkerKind,
  SerialQueue,
  SrError,
  checkId,
  fsyncDir,
  type ChangeRecord,
  type DiskInfo,
} from '@site-recovery/shared';
import { catalogFile, diskImageFile, disksDir, replicaDir, stateFile } from '../names.js';
import { readCatalog } from '../points/catalog.js';
import { FilePointStore } from '../points/file-point-store.js';
import { VmPoints } from '../points/vm-points.js';
import { finishSwitch, retireCurrent, stageReplica } from './layout-switch.js';
import { ReplicaImage } from './replica-image.js';
import { readReplicaState, writeReplicaState, type ReplicaStateFile } from './replica-state-file.js';
import {
  COPYING,
  sameDisks,
  type Replica,
  type ReplicaInfo,
  type ReplicaPosition,
  type RetiredReplicaInfo,
} from './replica-store.js';
import { RetiredReplica, nextRetiredSeq } from './retired-replica.js';
import type { FileReplicaStoreOptions } from './file-replica-store.js';

/** One VM's replica as local files (layout in names.ts), with the retired replicas kept beside it. */
export class FileReplica implements Replica {
  readonly vm: string;
  private readonly dir: string;
  /** State file changes, in call order. */
  private readonly stateWrites = new SerialQueue();
  private view: ReplicaInfo;
  private own: FilePointStore | undefined;
  private readonly vmPoints: VmPoints<RetiredReplica>;
  /** A disk-layout switch under way: point changes and materialisations wait for it. */
  private switching: Promise<void> | undefined;
  private readonly inlineMax: number;

  constructor(
    private readonly dataDir: string,
    private state: ReplicaStateFile,
    private images: ReplicaImage[],
    private readonly retiredList: RetiredReplica[],
    private readonly o: FileReplicaStoreOptions & { readonly inlineWriteMaxBytes: number },
  ) {
    this.vm = state.vm;
    this.dir = replicaDir(dataDir, state.vm);
    this.view = infoOf(state);
    this.inlineMax = o.inlineWriteMaxBytes;
    this.vmPoints = new VmPoints({
      settled: async () => {
        while (this.switching !== undefined) await this.switching.catch(() => undefined);
      },
      current: () => this.ownPoints(),
      retired: () => this.retiredList,
      drop: (r, pruned) => this.dropRetired(r, pruned),
    });
  }

  info(): ReplicaInfo {
    return this.view;
  }

  get points(): VmPoints<RetiredReplica> {
    this.ownPoints();
    return this.vmPoints;
  }

  retired(): RetiredReplicaInfo[] {
    return this.retiredList.map((r) => r.info());
  }

  async openPoints(): Promise<void> {
    this.own = await this.openOwnPoints();
  }

  private openOwnPoints(): Promise<FilePointStore> {
    return FilePointStore.open(
      this.dir,
      {
        disks: () => this.state.disks,
        file: (i) => this.images[i]?.file ?? '',
        read: (disk, offset, length) => this.read(disk, offset, length),
      },
      { ...this.o, taken: (id) => this.retiredList.some((r) => r.points.list().some((p) => p.id === id)) },
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
    // Write-ahead: the caller ran `points.protect` for this record's batch; refuse rather than
    // silently corrupt every recovery point if it did not.
    this.own?.checkProtected(r, this.state.generation);
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
   * Same layout: only the state changes (one atomic write); the disks keep their data. Another
   * layout: a replica with points is retired beside the new one (layout-switch.ts); one without
   * gets the new disks in place (the new state and a pending wipe persisted first, then the disks
   * replaced, then the wipe marked done; open() finishes an interrupted one).
   */
  async reset(generation: string, disks: readonly DiskInfo[]): Promise<void> {
    checkDisks(disks);
    const before = this.state.disks;
    if (sameDisks(before, disks)) {
      await this.persist((s) => ({ ...s, generation, appliedLsn: 0, initialSync: COPYING }));
      return;
    }
    if (this.ownPoints().newest() !== undefined) {
      this.switching = this.retireAndReplace(generation, disks);
      try {
        return await this.switching;
      } finally {
        this.switching = undefined;
      }
    }
    await this.persist((s) => ({
      ...s,
      generation,
      disks: copyDisks(disks),
      appliedLsn: 0,
      initialSync: COPYING,
      wipePending: true,
    }));
    const old = this.images;
    this.images = [];
    await Promise.all(old.map((i) => i.close()));
    await Promise.all(before.map((d) => fsp.rm(diskImageFile(this.dir, d.id), { force: true })));
    this.images = createImages(this.dir, disks, this.inlineMax);
    await fsyncDir(disksDir(this.dir));
    await this.finishWipe();
  }

  /** Zeroes every disk durably, then clears the pending wipe. */
  async finishWipe(): Promise<void> {
    await Promise.all(this.images.map((i) => i.wipe()));
    await this.persist((s) => ({ ...s, wipePending: false }));
  }

  async close(): Promise<void> {
    await this.closeOwn();
    await Promise.all(this.retiredList.map((r) => r.close()));
  }

  private ownPoints(): FilePointStore {
    if (this.own === undefined)
      throw new SrError(ErrorCode.INTERNAL, `points of ${this.vm} used before they were opened`);
    return this.own;
  }

  /** The current replica becomes retired replica `seq`, a staged one with the new layout takes its place. */
  private async retireAndReplace(generation: string, disks: readonly DiskInfo[]): Promise<void> {
    const { dataDir, vm } = this;
    await stageReplica(dataDir, {
      vm,
      generation,
      disks: copyDisks(disks),
      appliedLsn: 0,
      initialSync: COPYING,
      wipePending: false,
    });
    await this.o.onSwitchStep?.('staged');
    const seq = await nextRetiredSeq(dataDir, vm);
    // Materialisations read the replica's files by name: let those under way finish before they move.
    await this.ownPoints().whenUnpinned();
    // Until the new replica is open, the old catalog keeps answering lists (its logs closed, its files moving).
    await this.closeOwn(true);
    let moved = false;
    try {
      await retireCurrent(dataDir, vm, seq);
      moved = true;
      await this.o.onSwitchStep?.('retired');
    } finally {
      // After a failed rename the old replica is still current and the staged one goes; after the
      // rename the staged one moves in. Either way, what is at replicas/<vm> is opened again.
      await finishSwitch(dataDir, vm);
      const retired = moved ? await RetiredReplica.open(dataDir, vm, seq, this.o) : undefined;
      await this.reopenOwn(() => {
        if (retired !== undefined) this.retiredList.push(retired);
      });
    }
    await this.o.onSwitchStep?.('swapped');
  }

  private async closeOwn(keepCatalog = false): Promise<void> {
    await this.stateWrites.idle();
    await this.own?.close();
    if (!keepCatalog) this.own = undefined;
    const images = this.images;
    this.images = [];
    await Promise.all(images.map((i) => i.close()));
  }

  /** Opens what is at replicas/<vm> and makes it current in one step, with `also` (the retired replica). */
  private async reopenOwn(also: () => void): Promise<void> {
    const state = await readReplicaState(stateFile(this.dir));
    if (state === undefined)
      throw new SrError(ErrorCode.STATE_MISMATCH, `replica of ${this.vm} vanished while its disk layout changed`);
    const images = await openImages(this.dir, state, this.inlineMax);
    const previous = this.state;
    this.state = state; // the new store's catalog is read against the new disks
    let points: FilePointStore;
    try {
      points = await this.openOwnPoints();
    } catch (err) {
      this.state = previous;
      await Promise.all(images.map((i) => i.close()));
      throw err;
    }
    this.images = images;
    this.view = infoOf(state);
    this.own = points;
    also();
  }

  /** A retired replica whose last point went: remembered as pruned (if it was), then deleted. */
  private async dropRetired(r: RetiredReplica, pruned: boolean): Promise<void> {
    if (pruned) await this.ownPoints().remember(r.points.prunedIds());
    const i = this.retiredList.indexOf(r);
    if (i >= 0) this.retiredList.splice(i, 1);
    await r.remove();
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

/**
 * Opens the disks of a replica. A missing or wrongly sized disk is repaired only while nothing can
 * depend on its bytes (a creation cut short, or no applied data and no point); otherwise refused.
 */
export async function openImages(dir: string, state: ReplicaStateFile, inlineMax: number): Promise<ReplicaImage[]> {
  const repair =
    state.wipePending || (state.appliedLsn === 0 && ((await readCatalog(catalogFile(dir)))?.points.length ?? 0) === 0);
  const images: ReplicaImage[] = [];
  try {
    for (const d of state.disks) images.push(ReplicaImage.open(diskImageFile(dir, d.id), d.size, inlineMax, repair));
  } catch (err) {
    await Promise.all(images.map((i) => i.close()));
    throw err;
  }
  return images;
}

export function checkDisks(disks: readonly DiskInfo[]): void {
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

export function copyDisks(disks: readonly DiskInfo[]): DiskInfo[] {
  return disks.map((d) => ({ id: d.id, size: d.size }));
}

export function createImages(dir: string, disks: readonly DiskInfo[], inlineMax: number): ReplicaImage[] {
  const images: ReplicaImage[] = [];
  for (const d of disks) images.push(ReplicaImage.create(diskImageFile(dir, d.id), d.size, inlineMax));
  return images;
}

function infoOf(s: ReplicaStateFile): ReplicaInfo {
  return { vm: s.vm, generation: s.generation, disks: s.disks, appliedLsn: s.appliedLsn, initialSync: s.initialSync };
}
