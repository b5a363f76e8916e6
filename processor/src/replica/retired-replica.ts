import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { ErrorCode, SrError, closeFd, fsyncDir, pread, systemErrorCode } from '@site-recovery/shared';
import { diskImageFile, parseRetiredName, retiredReplicaDir, retiredVmDir, stateFile } from '../names.js';
import { FilePointStore, type PointStoreOptions } from '../points/file-point-store.js';
import { readReplicaState, type ReplicaStateFile } from './replica-state-file.js';
import type { RetiredReplicaInfo } from './replica-store.js';

/**
 * An older replica of a VM, retired when the source started a generation with another disk layout:
 * its disks and recovery points stay as they were, read-only, so its points keep restoring that
 * layout's disks from its own bytes. It goes when retention has taken its last point.
 */
export class RetiredReplica {
  private constructor(
    /** Its place in retirement order (1 is the oldest). */
    readonly seq: number,
    readonly dir: string,
    readonly state: ReplicaStateFile,
    readonly points: FilePointStore,
  ) {}

  /**
   * Opens retired replica `seq` of `vm`; `undefined` when the directory holds no replica (a removal a
   * crash interrupted: the caller deletes it). A missing or wrongly sized disk is refused: its points
   * could not restore it.
   */
  static async open(
    dataDir: string,
    vm: string,
    seq: number,
    o: PointStoreOptions,
  ): Promise<RetiredReplica | undefined> {
    const dir = retiredReplicaDir(dataDir, vm, seq);
    const state = await readReplicaState(stateFile(dir));
    if (state === undefined) return undefined;
    if (state.vm !== vm)
      throw new SrError(ErrorCode.STATE_MISMATCH, `retired replica ${dir} holds the state of VM "${state.vm}"`);
    for (const d of state.disks) {
      const file = diskImageFile(dir, d.id);
      let size: number;
      try {
        size = (await fsp.stat(file)).size;
      } catch (err) {
        throw new SrError(
          ErrorCode.BAD_DISK,
          `retired replica disk ${file} cannot be read: ${(err as Error).message}`,
          {
            cause: err,
          },
        );
      }
      if (size !== d.size)
        throw new SrError(
          ErrorCode.BAD_DISK,
          `retired replica disk ${file} is ${size} bytes, its state says ${d.size}`,
        );
    }
    const points = await FilePointStore.open(
      dir,
      {
        disks: () => state.disks,
        file: (i) => diskImageFile(dir, state.disks[i]!.id),
        read: (disk, offset, length) => readOnce(diskImageFile(dir, state.disks[disk]!.id), offset, length),
      },
      o,
    );
    return new RetiredReplica(seq, dir, state, points);
  }

  info(): RetiredReplicaInfo {
    return { generation: this.state.generation, disks: this.state.disks, points: this.points.list().length };
  }

  /**
   * Deletes the replica, crash-safely: its state file goes first (a directory without one is no
   * replica, and the next open finishes the removal), then the rest.
   */
  async remove(): Promise<void> {
    await this.points.close();
    await fsp.rm(stateFile(this.dir), { force: true });
    await fsyncDir(this.dir);
    await fsp.rm(this.dir, { recursive: true, force: true });
  }

  close(): Promise<void> {
    return this.points.close();
  }
}

/**
 * The retired replicas of `vm`, oldest first. What a crash left of a removal goes, and so does a
 * replica whose last point is gone (nothing of it can be restored any more).
 */
export async function openRetired(dataDir: string, vm: string, o: PointStoreOptions): Promise<RetiredReplica[]> {
  const out: RetiredReplica[] = [];
  try {
    for (const seq of await retiredSeqs(dataDir, vm)) {
      const r = await RetiredReplica.open(dataDir, vm, seq, o);
      if (r === undefined) await fsp.rm(retiredReplicaDir(dataDir, vm, seq), { recursive: true, force: true });
      else if (r.points.list().length === 0) await r.remove();
      else out.push(r);
    }
  } catch (err) {
    await Promise.all(out.map((r) => r.close()));
    throw err;
  }
  return out;
}

/** The number the next retired replica of `vm` gets: past every directory there, leftovers included. */
export async function nextRetiredSeq(dataDir: string, vm: string): Promise<number> {
  return Math.max(0, ...(await retiredSeqs(dataDir, vm))) + 1;
}

async function retiredSeqs(dataDir: string, vm: string): Promise<number[]> {
  let names: string[];
  try {
    names = await fsp.readdir(retiredVmDir(dataDir, vm));
  } catch (err) {
    if (systemErrorCode(err) === 'ENOENT') return [];
    throw err;
  }
  return names
    .map(parseRetiredName)
    .filter((n): n is number => n !== undefined)
    .sort((a, b) => a - b);
}

/** A read of a disk nobody writes any more: a descriptor per read keeps a retired replica's fds at zero. */
async function readOnce(file: string, offset: number, length: number): Promise<Buffer> {
  const fd = fs.openSync(file, 'r');
  try {
    return await pread(fd, length, offset);
  } finally {
    await closeFd(fd);
  }
}
