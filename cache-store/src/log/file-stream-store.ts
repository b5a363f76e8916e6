import fsp from 'node:fs/promises';
import {
  ErrorCode,
  KeyedSerialQueue,
  SrError,
  checkId,
  closeFd,
  fdatasync,
  fsyncDir,
  isSrError,
  pwrite,
  type DiskInfo,
} from '@site-recovery/shared';
import { FileStreamLog, type FileStreamLogOptions } from './file-stream-log.js';
import { createSegment } from './segment-scan.js';
import { DEFAULT_RESERVE_BYTES, SpaceReserve } from './space-reserve.js';
import {
  healthProbeFile,
  metaFile,
  reserveFile,
  parseSegmentFileName,
  parseVmDirName,
  segmentFile,
  vmDir,
  vmsDir,
} from '../names.js';
import { openFd, storageError } from './storage-errors.js';
import type { DamagedStream, StreamLog, StreamStore } from './stream-log.js';
import { readVmMeta, writeVmMeta, type VmMeta } from './vm-meta.js';

export interface FileStreamStoreOptions extends Omit<FileStreamLogOptions, 'reserve'> {
  /**
   * Room held back in the data directory so that the processor's confirmations can still be recorded
   * (and free segments) when the disk is full: see SpaceReserve. Default 1 MiB; 0 holds none.
   */
  readonly reserveBytes?: number;
}

/**
 * {@link StreamStore} in a data directory: `vms/<vm>/` per VM (names.ts). A new generation is
 * written in an order that survives a crash at any step: the meta file naming it first, then the
 * old segments are deleted, then the first new segment is created; opening deletes segments whose
 * header names another generation than the meta file.
 */
export class FileStreamStore implements StreamStore {
  private readonly byVm = new Map<string, FileStreamLog>();
  private readonly damagedVms = new Map<string, DamagedStream>();
  /** One generation change at a time per VM. */
  /** Generation changes, one at a time per VM; `close` waits for them. */
  private readonly switches = new KeyedSerialQueue<string>();
  private closed = false;
  /** The write check under way; concurrent health requests share it. */
  private checking: Promise<SrError | undefined> | undefined;

  private readonly options: FileStreamLogOptions;

  private constructor(
    private readonly dataDir: string,
    options: FileStreamStoreOptions,
    readonly reserve: SpaceReserve,
  ) {
    this.options = {
      ...(options.segmentBytes !== undefined ? { segmentBytes: options.segmentBytes } : {}),
      ...(options.maxFrameBytes !== undefined ? { maxFrameBytes: options.maxFrameBytes } : {}),
      ...(options.readChunkBytes !== undefined ? { readChunkBytes: options.readChunkBytes } : {}),
      ...(options.log !== undefined ? { log: options.log } : {}),
      reserve,
    };
  }

  /**
   * Opens every VM's log under `dataDir` (created when missing). A VM whose files fail validation
   * (SR_JOURNAL_CORRUPT) is set aside — logged and listed by `damaged()` — so one damaged stream does
   * not stop the cache-store for every other VM; other failures (permissions, I/O) refuse to open.
   */
  static async open(dataDir: string, options: FileStreamStoreOptions = {}): Promise<FileStreamStore> {
    await fsp.mkdir(vmsDir(dataDir), { recursive: true });
    const reserve = await SpaceReserve.open(
      reserveFile(dataDir),
      options.reserveBytes ?? DEFAULT_RESERVE_BYTES,
      options.log,
    );
    const store = new FileStreamStore(dataDir, options, reserve);
    try {
      for (const name of (await fsp.readdir(vmsDir(dataDir))).sort()) {
        const vm = parseVmDirName(name);
        if (vm === undefined) continue;
        const dir = vmDir(dataDir, vm);
        let meta: VmMeta | undefined;
        try {
          meta = await readVmMeta(metaFile(dir), vm);
          if (meta === undefined) {
            // A crash before the first meta write of a VM: it never held a record.
            options.log?.warn({ dir }, 'VM directory without meta.json ignored');
            continue;
          }
          store.byVm.set(vm, await FileStreamLog.open(dir, meta, store.options));
        } catch (err) {
          if (!isSrError(err) || err.code !== ErrorCode.JOURNAL_CORRUPT) throw err;
          store.damagedVms.set(vm, {
            vm,
            ...(meta !== undefined ? { generation: meta.generation } : {}),
            error: err.message,
          });
          options.log?.error(
            { vm, err: err.message },
            'stored stream damaged: VM set aside until its agent starts a new generation (it begins one by itself when refused)',
          );
        }
      }
    } catch (err) {
      await store.close().catch(() => undefined);
      throw err;
    }
    return store;
  }

  logs(): readonly StreamLog[] {
    return [...this.byVm.values()];
  }

  get(vm: string): StreamLog | undefined {
    return this.byVm.get(vm);
  }

  damaged(): readonly DamagedStream[] {
    return [...this.damagedVms.values()];
  }

  openGeneration(vm: string, generation: string, disks: readonly DiskInfo[]): Promise<StreamLog> {
    checkId('VM name', vm);
    return this.switches.run(vm, () => this.switchGeneration(vm, generation, disks));
  }

  private async switchGeneration(vm: string, generation: string, disks: readonly DiskInfo[]): Promise<StreamLog> {
    const damage = this.damagedVms.get(vm);
    if (damage !== undefined && (damage.generation === undefined || damage.generation === generation)) {
      const how =
        damage.generation === undefined
          ? `its meta file is unreadable, so this cache-store cannot tell generations apart: move ${vmDir(this.dataDir, vm)} aside, restart the cache-store; the agent's next new generation (it begins one by itself on this refusal) is then taken`
          : 'a new generation of the agent replaces it: the agent begins one by itself on this refusal (or restart it with --resync)';
      throw new SrError(
        ErrorCode.JOURNAL_CORRUPT,
        `the stored stream of ${vm} generation ${generation} is damaged (${damage.error}); ${how}`,
      );
    }
    const current = this.byVm.get(vm);
    if (current !== undefined && current.generation === generation) return current;
    if (this.closed) throw new SrError(ErrorCode.SHUTTING_DOWN, 'the stream store is closed');
    const dir = vmDir(this.dataDir, vm);
    const meta: VmMeta = {
      version: 1,
      vm,
      generation,
      disks: disks.map((d) => ({ id: d.id, size: d.size })),
      appliedLsn: 0,
    };
    if (current !== undefined) {
      this.byVm.delete(vm);
      await current
        .close()
        .catch((err: unknown) =>
          this.options.log?.warn({ vm, err: (err as Error).message }, 'closing the replaced log failed'),
        );
    }
    try {
      await fsp.mkdir(dir, { recursive: true });
      await fsyncDir(vmsDir(this.dataDir));
      await writeVmMeta(metaFile(dir), meta);
      for (const name of await fsp.readdir(dir)) {
        const lsn = parseSegmentFileName(name);
        if (lsn !== undefined) await fsp.unlink(segmentFile(dir, lsn));
      }
      const first = await createSegment(dir, 1, generation); // also makes the deletions durable
      await closeFd(first.fd);
    } catch (err) {
      throw storageError(err, `cannot start generation ${generation} of ${vm} in ${dir}`);
    }
    const log = await FileStreamLog.open(dir, meta, this.options);
    this.byVm.set(vm, log);
    this.damagedVms.delete(vm); // the new generation replaced the damaged files
    this.options.log?.info({ vm, generation, replaced: current?.generation ?? damage?.generation }, 'new generation');
    return log;
  }

  checkWritable(): Promise<SrError | undefined> {
    this.checking ??= this.writeProbe().finally(() => (this.checking = undefined));
    return this.checking;
  }

  /** One page, so a file system with no whole page left fails it (a smaller write might still fit). */
  private async writeProbe(): Promise<SrError | undefined> {
    const file = healthProbeFile(this.dataDir);
    try {
      const fd = await openFd(file, 'w');
      try {
        await pwrite(fd, Buffer.alloc(4096), 0);
        await fdatasync(fd);
      } finally {
        await closeFd(fd);
      }
      await fsp.unlink(file);
      return undefined;
    } catch (err) {
      await fsp.rm(file, { force: true }).catch(() => undefined);
      return storageError(err, `the data directory ${this.dataDir} takes no writes`);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.switches.idle();
    const logs = [...this.byVm.values()];
    this.byVm.clear();
    const results = await Promise.allSettled(logs.map((l) => l.close()));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
  }
}
