import fsp from 'node:fs/promises';
import { ErrorCode, SerialQueue, SrError, fsyncDir, type ChangeRecord, type Logger } from '@site-recovery/shared';
import {
  catalogFile,
  hasUndoLogPrefix,
  isTempFileName,
  pointId,
  pointsDir,
  undoLogFile,
  undoLogName,
} from '../names.js';
import { readCatalog, writeCatalog, type PointCatalog } from './catalog.js';
import { materializePoint, type MaterializeLog } from './materializer.js';
import type { PointKind, RecoveryPoint } from './recovery-point.js';
import type { MaterializePlan, NewPoint, PointPatch, ReplicaPoints } from '../replica/replica-store.js';
import { ZeroBlocks, blocksToSave, mergeInto, readBlocks, type BlocksToSave, type DiskSource } from './undo-blocks.js';
import { UndoLog } from './undo-log.js';

export interface PointStoreOptions {
  /** Copy-on-write granularity: the unit an undo entry saves. Used when a replica has no points yet. Default 64 KiB. */
  readonly undoBlockSize?: number;
  /** Pruned point ids remembered (so failover can say "pruned by retention"). Default 10 000. */
  readonly maxPrunedIds?: number;
  /** Test hook: called after each durable undo append, before the records it protects are applied. */
  readonly onUndoDurable?: () => void;
}

/** What the replica owning a point store adds to its options. */
export interface PointStoreContext extends PointStoreOptions {
  /** Ids a new point must not take: those of the VM's other (retired) replicas. */
  readonly taken?: (id: string) => boolean;
}

export const DEFAULT_UNDO_BLOCK_SIZE = 64 * 1024;
const DEFAULT_MAX_PRUNED_IDS = 10_000;

/**
 * Recovery points of one local replica (DESIGN.md "Recovery points"): the replica holds the newest
 * state; each point has an undo log of the blocks first overwritten after it. The newest point's log
 * is the open one; older logs are closed and change only when a point between them is removed.
 */
export class FilePointStore implements ReplicaPoints {
  private catalog: PointCatalog;
  /** Undo logs by point id, loaded (index rebuilt) at open. */
  private readonly logs = new Map<string, UndoLog>();
  /** Catalog changes, undo appends and log snapshots, one at a time. */
  private readonly queue = new SerialQueue();
  private pins = 0;
  private unpinned: (() => void)[] = [];
  private readonly maxPruned: number;
  /** Blocks found all zero since the newest point (what zeroing records need not save). */
  private readonly zeroes: ZeroBlocks;

  private constructor(
    private readonly dir: string,
    private readonly source: DiskSource,
    private readonly log: Logger | undefined,
    private readonly o: PointStoreContext,
    catalog: PointCatalog,
  ) {
    this.catalog = catalog;
    this.maxPruned = o.maxPrunedIds ?? DEFAULT_MAX_PRUNED_IDS;
    this.zeroes = new ZeroBlocks(() => source.disks(), catalog.blockSize);
  }

  /** Opens (or starts) the points of the replica in `replicaDir`; removes logs no point owns. */
  static async open(
    replicaDir: string,
    source: DiskSource,
    o: PointStoreContext = {},
    log?: Logger,
  ): Promise<FilePointStore> {
    const dir = pointsDir(replicaDir);
    await fsp.mkdir(dir, { recursive: true });
    const catalog = (await readCatalog(catalogFile(replicaDir))) ?? {
      blockSize: o.undoBlockSize ?? DEFAULT_UNDO_BLOCK_SIZE,
      points: [],
      pruned: [],
    };
    const store = new FilePointStore(replicaDir, source, log, o, catalog);
    const owned = new Set(catalog.points.map((p) => p.undoLog));
    for (const name of await fsp.readdir(dir)) {
      // Leftovers of a crash: a log made for a cut that never reached the catalog, or one removed from it.
      if (!owned.has(name) && (isTempFileName(name) || hasUndoLogPrefix(name)))
        await fsp.rm(undoLogFile(replicaDir, name), { force: true });
    }
    const newest = catalog.points.at(-1);
    for (const p of catalog.points) {
      const l = await UndoLog.open(undoLogFile(replicaDir, p.undoLog), catalog.blockSize);
      if (p !== newest) await l.close();
      store.logs.set(p.id, l);
    }
    return store;
  }

  get blockSize(): number {
    return this.catalog.blockSize;
  }

  list(): RecoveryPoint[] {
    return this.catalog.points.map((p) => ({ ...p, undoBytes: this.logs.get(p.id)?.bytes ?? p.undoBytes }));
  }

  newest(): RecoveryPoint | undefined {
    const p = this.catalog.points.at(-1);
    return p && { ...p, undoBytes: this.logs.get(p.id)?.bytes ?? p.undoBytes };
  }

  isPruned(id: string): boolean {
    return this.catalog.pruned.includes(id);
  }

  /** The ids retention removed (the newest `maxPrunedIds`). */
  prunedIds(): readonly string[] {
    return this.catalog.pruned;
  }

  /** Remembers ids retention removed elsewhere (a retired replica that went), so failover says "pruned". */
  remember(ids: readonly string[]): Promise<void> {
    return this.queue.run(async () => {
      const fresh = ids.filter((id) => !this.catalog.pruned.includes(id));
      if (fresh.length === 0) return;
      await this.writeCatalog({ ...this.catalog, pruned: [...this.catalog.pruned, ...fresh].slice(-this.maxPruned) });
    });
  }

  /**
   * Write-ahead for one batch: saves, durably and with one fdatasync, the old contents of every block
   * the records will overwrite that the newest point's log does not hold yet. The caller applies the
   * records only after this resolves. Records at or below the newest point's LSN (replayed after a
   * restart) belong before the point and are not saved.
   */
  protect(records: readonly ChangeRecord[], generation: string): Promise<void> | undefined {
    const wanted = this.unprotected(records, generation);
    if (wanted === undefined) return undefined;
    return this.queue.run(async () => {
      const again = this.unprotected(records, generation);
      if (again !== undefined) await this.save(again);
    });
  }

  /** Throws unless every block `r` overwrites is protected: the last line of defence in the write path. */
  checkProtected(r: ChangeRecord, generation: string): void {
    if (this.unprotected([r], generation) !== undefined) {
      throw new SrError(
        ErrorCode.INTERNAL,
        `record ${r.lsn} would overwrite blocks not saved in the undo log of point ${this.catalog.points.at(-1)?.id ?? '?'}`,
      );
    }
  }

  /**
   * Cuts a point at `lsn`: O(1) in the size of the disks (a new empty log, the catalog rewritten).
   * The caller guarantees the replica holds exactly the records up to `lsn` and nothing after it.
   * A point at the newest point's LSN is that point (an 'app' cut upgrades its kind).
   */
  cut(p: NewPoint): Promise<RecoveryPoint> {
    return this.queue.run(async () => {
      const points = this.catalog.points;
      const newest = points.at(-1);
      if (newest !== undefined && newest.generation === p.generation) {
        if (p.lsn < newest.lsn)
          throw new SrError(
            ErrorCode.SEQUENCE,
            `cannot cut a point at LSN ${p.lsn} before the newest point ${newest.id}`,
          );
        if (p.lsn === newest.lsn) {
          const kind = rank(p.kind) > rank(newest.kind) ? p.kind : newest.kind;
          const tag = newest.round === undefined && p.round !== undefined;
          if (kind === newest.kind && !tag) return { ...newest, undoBytes: this.logs.get(newest.id)?.bytes ?? 0 };
          const upgraded: RecoveryPoint = { ...newest, kind, ...(tag ? { round: p.round } : {}) };
          await this.writeCatalog({ ...this.catalog, points: [...points.slice(0, -1), upgraded] });
          return upgraded;
        }
      }
      const ms = p.time.getTime();
      let id = pointId(p.lsn, ms);
      const used = (x: string): boolean =>
        points.some((q) => q.id === x) || this.catalog.pruned.includes(x) || this.o.taken?.(x) === true;
      for (let n = 1; used(id); n++) id = pointId(p.lsn, ms, n);
      const name = undoLogName(id);
      const log = await UndoLog.create(undoLogFile(this.dir, name), this.blockSize);
      await fsyncDir(pointsDir(this.dir));
      const point: RecoveryPoint = {
        id,
        time: p.time.toISOString(),
        lsn: p.lsn,
        kind: p.kind,
        generation: p.generation,
        undoLog: name,
        undoBytes: log.bytes,
        ...(p.round !== undefined ? { round: p.round } : {}),
      };
      try {
        await this.writeCatalog({ ...this.catalog, points: [...points, point] });
      } catch (err) {
        await log.close();
        await fsp.rm(log.file, { force: true });
        throw err;
      }
      const previous = newest !== undefined ? this.logs.get(newest.id) : undefined;
      this.logs.set(id, log);
      this.zeroes.clear();
      await previous?.close();
      this.log?.debug({ point: id, lsn: p.lsn, kind: p.kind }, 'recovery point cut');
      return point;
    });
  }

  /**
   * Changes what a point says of itself (its kind, group point, round tag; a field given as
   * undefined is removed), never where it is or what it restores; `undefined` when the point is
   * gone (pruned meanwhile).
   */
  relabel(id: string, patch: PointPatch): Promise<RecoveryPoint | undefined> {
    return this.queue.run(async () => {
      const points = this.catalog.points;
      const i = points.findIndex((q) => q.id === id);
      if (i < 0) return undefined;
      // A field patched to undefined goes (a failed round's point is no group point any more).
      const { group, round, ...rest } = { ...points[i]!, ...patch };
      const next: RecoveryPoint = { ...rest, ...(group !== undefined ? { group } : {}), ...(round ? { round } : {}) };
      await this.writeCatalog({ ...this.catalog, points: points.map((q, j) => (j === i ? next : q)) });
      return { ...next, undoBytes: this.logs.get(id)?.bytes ?? next.undoBytes };
    });
  }

  /**
   * Removes points, oldest first. The oldest point's log is simply deleted (O(1)); any other point's
   * log is merged into the next older one first — for each block the older log lacks, the removed
   * log's entry — so the older point still restores (cost proportional to the removed log). Refused
   * (`false`) while a materialisation is reading the logs.
   */
  remove(ids: readonly string[], pruned: boolean): Promise<boolean> {
    return this.queue.run(async () => {
      if (this.pins > 0) return false;
      const doomed = new Set(ids);
      for (const p of [...this.catalog.points]) {
        if (!doomed.has(p.id)) continue;
        const points = this.catalog.points;
        const i = points.findIndex((q) => q.id === p.id);
        const removed = this.logs.get(p.id)!;
        const older = i > 0 ? this.logs.get(points[i - 1]!.id) : undefined;
        if (older !== undefined) {
          await mergeInto(removed, older, this.blockSize);
          // The older point becomes the newest only if the removed one was: then its log stays open.
          if (i !== points.length - 1) await older.close();
        }
        const keptPruned = pruned ? [...this.catalog.pruned, p.id].slice(-this.maxPruned) : this.catalog.pruned;
        await this.writeCatalog({ ...this.catalog, points: points.filter((q) => q.id !== p.id), pruned: keptPruned });
        this.logs.delete(p.id);
        this.zeroes.clear();
        await removed.close();
        await fsp.rm(removed.file, { force: true });
        this.log?.debug({ point: p.id, merged: older !== undefined, pruned }, 'recovery point removed');
      }
      await fsyncDir(pointsDir(this.dir));
      return true;
    });
  }

  /** Which logs restore `id` (newest first); `undefined` for an unknown point. */
  plan(id: string): MaterializePlan | undefined {
    const points = this.catalog.points;
    const i = points.findIndex((p) => p.id === id);
    if (i < 0) return undefined;
    const logs = points
      .slice(i)
      .reverse()
      .map((p) => ({ pointId: p.id, bytes: this.logs.get(p.id)?.bytes ?? 0 }));
    return {
      point: { ...points[i]!, undoBytes: logs.at(-1)?.bytes ?? 0 },
      disks: [...this.source.disks()],
      logs,
      undoBytes: logs.reduce((s, l) => s + l.bytes, 0),
    };
  }

  /**
   * Writes point `plan.point` into `targets` (one file per disk). Retention waits until it is done,
   * so the logs it reads stay as planned; points cut meanwhile are added to the plan (see the
   * materialiser for why that is correct).
   */
  async materialize(plan: MaterializePlan, targets: readonly string[]): Promise<void> {
    this.pins++;
    try {
      await materializePoint({
        disks: plan.disks,
        sources: plan.disks.map((_, i) => this.source.file(i)),
        targets,
        snapshotLogs: () =>
          this.queue.run(() => {
            const points = this.catalog.points;
            const i = points.findIndex((p) => p.id === plan.point.id);
            if (i < 0)
              return Promise.reject(
                new SrError(ErrorCode.INTERNAL, `point ${plan.point.id} vanished while it was being materialised`),
              );
            const logs = points
              .slice(i)
              .reverse()
              .map((p): MaterializeLog => {
                const l = this.logs.get(p.id)!;
                return { file: l.file, upTo: l.bytes };
              });
            return Promise.resolve(logs);
          }),
      });
    } finally {
      this.pins--;
      if (this.pins === 0) for (const w of this.unpinned.splice(0)) w();
    }
  }

  /** Resolves once no materialisation is reading the replica and its logs. */
  whenUnpinned(): Promise<void> {
    if (this.pins === 0) return Promise.resolve();
    return new Promise((resolve) => this.unpinned.push(resolve));
  }

  async close(): Promise<void> {
    await this.queue.run(async () => {
      for (const l of this.logs.values()) await l.close();
    });
  }

  private openLog(): UndoLog | undefined {
    const newest = this.catalog.points.at(-1);
    return newest !== undefined ? this.logs.get(newest.id) : undefined;
  }

  /** Blocks the records overwrite that need saving, by disk; `undefined` when none do. */
  private unprotected(records: readonly ChangeRecord[], generation: string): BlocksToSave | undefined {
    return blocksToSave(records, generation, this.catalog.points.at(-1), this.openLog(), this.blockSize, this.zeroes);
  }

  /**
   * Reads the blocks' current contents and appends them to the open log with one fdatasync. Blocks
   * only zeroing records touch are saved only if they hold data; the others are remembered as zero.
   */
  private async save(wanted: BlocksToSave): Promise<void> {
    const entries = await readBlocks(this.source, wanted.written, this.blockSize);
    const zeroed = await readBlocks(this.source, wanted.zeroed, this.blockSize);
    for (const e of zeroed) if (e.data !== undefined) entries.push(e);
    if (entries.length > 0) {
      await this.openLog()!.append(entries);
      this.o.onUndoDurable?.();
    }
    for (const e of zeroed) if (e.data === undefined) this.zeroes.add(e.disk, e.offset / this.blockSize);
  }

  private async writeCatalog(next: PointCatalog): Promise<void> {
    await writeCatalog(catalogFile(this.dir), {
      ...next,
      points: next.points.map((p) => ({ ...p, undoBytes: this.logs.get(p.id)?.bytes ?? p.undoBytes })),
    });
    this.catalog = next;
  }
}

/** Multi-VM beats app-consistent beats crash-consistent when two cuts land on one LSN. */
function rank(k: PointKind): number {
  return k === 'crash' ? 0 : k === 'app' ? 1 : 2;
}
