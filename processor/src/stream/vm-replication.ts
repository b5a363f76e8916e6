import {
  ErrorCode,
  SerialQueue,
  SrError,
  type ChangeRecord,
  type DiskInfo,
  type Logger,
  type Progress,
  type VmInfo,
} from '@site-recovery/shared';
import { InitialSyncTracker, progressLsn, sameSync } from './initial-copy-tracker.js';
import { PointError, PointErrorCode } from '../api/error-codes.js';
import { LagStats } from './lag-stats.js';
import type { PointKind, RecoveryPoint, RoundTag } from '../points/recovery-point.js';
import { atMarker, decodeGroupMarkers, type GroupRecordHooks, type MarkerTarget } from './markers.js';
import { ScanPoints } from './scan-points.js';
import { RecordApplier, type RecordApplierOptions } from './record-applier.js';
import { submitProtected } from './protected-submit.js';
import { COPYING, sameDisks, type Replica, type ReplicaStore } from '../replica/replica-store.js';
import { asStorageError, errorInfo, isStorageCode } from './storage-error.js';
import { describeVm, type ErrorInfo, type FailoverState, type VmStatus } from './vm-status.js';

export interface VmReplicationOptions extends Omit<RecordApplierOptions, 'onApplied'> {
  /** Applied bytes after which a confirmation round starts before the interval is up. Default 64 MiB. */
  readonly confirmBytes?: number;
  /** Recent records the lag percentiles cover. Default 4096. */
  readonly lagWindow?: number;
}

export const DEFAULT_CONFIRM_BYTES = 64 * 1024 * 1024;
const DEFAULT_LAG_WINDOW = 4096;

/** What a VM's replication needs from the rest of the processor. */
export interface VmReplicationHooks {
  /** Tells the cache-store that records up to `lsn` are durable; false when there is no stream to tell. */
  confirm(vm: string, generation: string, lsn: number): boolean;
  /** Local storage failed: the stream must be dropped and resent from the durable position. */
  fault(vm: string, err: SrError): void;
  /** Where the VM's replication-group records go (absent: they cut and record nothing). */
  readonly group?: GroupRecordHooks;
}

export type { ErrorInfo, FailoverState, VmState, VmStatus } from './vm-status.js';

/**
 * One VM's replica and where its stream stands: records are applied as batches arrive, made durable
 * and confirmed in rounds (DESIGN.md invariant 2: confirm only what is fsynced and persisted).
 */
export class VmReplication {
  private replica: Replica | undefined;
  private applier: RecordApplier | undefined;
  private readonly sync: InitialSyncTracker;
  private readonly lag: LagStats;
  private durableLsn = 0;
  private confirmedLsn = 0;
  private bytesSinceFlush = 0;
  private cacheStore: { generation: string; firstLsn: number; lastLsn: number } | undefined;
  private error: ErrorInfo | undefined;
  private lastError: ErrorInfo | undefined;
  /** Set when storage failed: what was applied after the durable position cannot be trusted. */
  private rewindToDurable = false;
  /** Generation changes, durability rounds and close, one at a time. */
  private readonly exclusive = new SerialQueue();
  private flushing: Promise<void> | undefined;
  private flushAgain = false;
  private readonly confirmBytes: number;
  /** Serialises applying batches with cutting points: a cut sees no batch half-submitted. */
  private readonly applying = new SerialQueue();
  private failoverState: FailoverState = 'none';
  /** What a marker acts on (markers.ts), with the applying queue held. */
  private readonly markers: MarkerTarget;
  /** Where a watch-mode VM's points may be cut: its clean scans. */
  readonly scans: ScanPoints;

  constructor(
    readonly vm: string,
    private readonly store: ReplicaStore,
    replica: Replica | undefined,
    private readonly hooks: VmReplicationHooks,
    private readonly log: Logger,
    private readonly o: VmReplicationOptions = {},
    /** Set when the replica exists but cannot be opened; the VM is not subscribed. */
    private readonly openError?: SrError,
  ) {
    this.confirmBytes = o.confirmBytes ?? DEFAULT_CONFIRM_BYTES;
    this.lag = new LagStats(o.lagWindow ?? DEFAULT_LAG_WINDOW);
    this.sync = new InitialSyncTracker(COPYING);
    this.scans = new ScanPoints(vm, log);
    this.markers = {
      vm,
      log,
      copiedAt: (lsn) => this.sync.at(lsn).state === 'done',
      cut: (kind, round) => this.cutLocked(kind, round),
      drain: async () => this.applier?.drain(),
      watched: () => this.scans.watched,
      cleanScan: (lsn) => this.scans.atScan(lsn, this.sync.at(lsn).state === 'done', () => this.cutLocked('crash')),
    };
    if (openError !== undefined) this.error = errorInfo(openError);
    if (replica !== undefined) this.attach(replica);
  }

  get generation(): string | undefined {
    return this.replica?.info().generation;
  }

  /** Whether the VM may be subscribed (its replica, if any, opened, and not failed over). */
  get usable(): boolean {
    return this.openError === undefined && this.failoverState === 'none';
  }

  /** The replica, for recovery points and failover; `undefined` before the first stream. */
  get current(): Replica | undefined {
    return this.replica;
  }

  get failover(): FailoverState {
    return this.failoverState;
  }

  /**
   * Moves the VM's failover state. Anything but 'none' stops applying: batches still arriving are
   * ignored and the VM is not subscribed again. Back to 'none' (a failed failover) drops nothing the
   * stream cannot resend: batches ignored meanwhile leave a gap the next one reports, and the VM is
   * subscribed again from its applied position.
   */
  async setFailover(state: FailoverState): Promise<void> {
    this.failoverState = state;
    if (state !== 'none') await this.applying.run(async () => this.applier?.drain());
  }

  get appliedLsn(): number {
    return this.applier?.applied ?? 0;
  }

  get cacheStoreLastLsn(): number | undefined {
    const cs = this.cacheStore;
    return cs !== undefined && cs.generation === this.generation ? cs.lastLsn : undefined;
  }

  /**
   * Cuts a point at the applied position (DESIGN.md invariant 3): no batch is half-submitted, every
   * record up to it has landed and none after it has. The replica is made durable up to it first,
   * so a restart never resumes below the newest point. Refused mid-resync (invariant 5). A watch-mode
   * VM's replica is a state of its source only at a clean scan: see {@link ScanPoints.latest}.
   */
  cutPoint(kind: PointKind): Promise<RecoveryPoint> {
    return this.applying.run(async () => {
      if (!this.scans.watched) return this.cutLocked(kind);
      await this.applier?.drain();
      return this.scans.latest(this.appliedLsn, this.replica?.points.newest(), () => this.cutLocked(kind));
    });
  }

  /** The schedule's crash-consistent point; a watch-mode VM's waits for a clean scan (ScanPoints.due). */
  cutScheduled(): Promise<void> {
    return this.applying.run(async () => {
      if (!this.scans.watched) return void (await this.cutLocked('crash'));
      await this.applier?.drain();
      await this.scans.due(this.appliedLsn, () => this.cutLocked('crash'));
    });
  }

  noteCacheStore(info: VmInfo): void {
    this.cacheStore = { generation: info.generation, firstLsn: info.firstLsn, lastLsn: info.lastLsn };
  }

  /**
   * Where a subscription starts: after every record that has landed. Waits for records in flight and,
   * after a storage failure, steps back to the durable position so lost writes are sent again.
   */
  async subscription(): Promise<{ generation: string | null; from: number }> {
    await this.exclusive.run(async () => {
      const applier = this.applier;
      if (applier === undefined) return;
      await applier.drain();
      if (applier.failed !== undefined || this.rewindToDurable) {
        applier.rewind(this.durableLsn);
        this.sync.forgetAfter(this.durableLsn);
        this.rewindToDurable = false;
      }
    });
    return { generation: this.generation ?? null, from: (this.applier?.submitted ?? 0) + 1 };
  }

  /**
   * The cache-store starts a stream. A generation other than the replica's starts over: position 0,
   * initial copy `copying`, disks zeroed (replaced if the layout changed). Within one generation the
   * disk layout is fixed, so a different one is refused.
   */
  beginStream(generation: string, disks: readonly DiskInfo[]): Promise<void> {
    return this.exclusive.run(async () => {
      // A new stream (often a new connection) has not been told what is durable: the next round does.
      this.confirmedLsn = 0;
      const replica = this.replica;
      if (replica === undefined) {
        this.log.info({ vm: this.vm, generation, disks }, 'creating replica');
        this.attach(await this.store.create(this.vm, generation, disks));
        return;
      }
      const info = replica.info();
      if (info.generation === generation) {
        if (!sameDisks(info.disks, disks)) {
          throw new SrError(
            ErrorCode.STATE_MISMATCH,
            `stream of ${this.vm} generation ${generation} declares disks ${describe(disks)}, the replica has ${describe(info.disks)}`,
          );
        }
        return;
      }
      await this.applier?.drain();
      this.log.info(
        { vm: this.vm, from: info.generation, to: generation, sameDisks: sameDisks(info.disks, disks) },
        'new generation: resyncing replica',
      );
      await replica.reset(generation, disks);
      this.attach(replica);
    });
  }

  /**
   * Applies a verified batch: records up to the applied position are skipped, the rest must follow
   * on from it (SR_SEQUENCE otherwise, before anything of the batch is applied).
   */
  applyBatch(generation: string, records: readonly ChangeRecord[], progress: Progress | undefined): Promise<void> {
    return this.applying.run(() => this.applyLocked(generation, records, progress));
  }

  private async applyLocked(
    generation: string,
    records: readonly ChangeRecord[],
    progress: Progress | undefined,
  ): Promise<void> {
    // Failed over: the source's later writes are not the VM any more.
    if (this.failoverState !== 'none') return;
    const applier = this.applier;
    if (applier === undefined || this.generation !== generation)
      throw new SrError(ErrorCode.PROTOCOL, `batch for ${this.vm} before its stream began`);
    // Group payloads are checked before anything of the batch is applied (SR_PROTOCOL).
    const groups = decodeGroupMarkers(records);
    const last = records[records.length - 1]!.lsn;
    if (this.cacheStore === undefined || this.cacheStore.generation !== generation)
      this.cacheStore = { generation, firstLsn: records[0]!.lsn, lastLsn: last };
    else this.cacheStore.lastLsn = Math.max(this.cacheStore.lastLsn, last);
    let skip = 0;
    while (skip < records.length && records[skip]!.lsn <= applier.submitted) skip++;
    if (skip < records.length) {
      const first = records[skip]!.lsn;
      if (first !== applier.submitted + 1) {
        throw new SrError(
          ErrorCode.SEQUENCE,
          `batch of ${this.vm} continues at LSN ${first}, the replica holds up to ${applier.submitted}: records are missing`,
        );
      }
      if (progress !== undefined) this.sync.note(progressLsn(records), progress);
      const fresh = skip === 0 ? records : records.slice(skip);
      await submitProtected(applier, this.replica!.points, generation, fresh, (m) =>
        atMarker(this.markers, this.hooks.group, m, groups?.get(m.lsn)),
      );
      for (let i = skip; i < records.length; i++) this.bytesSinceFlush += records[i]!.length;
    } else if (progress !== undefined) this.sync.note(progressLsn(records), progress);
    this.error = undefined;
    if (this.bytesSinceFlush >= this.confirmBytes) void this.flush();
  }

  private async cutLocked(kind: PointKind, round?: RoundTag): Promise<RecoveryPoint> {
    const replica = this.replica;
    const applier = this.applier;
    if (replica === undefined || applier === undefined)
      throw new PointError(PointErrorCode.RESYNCING, `${this.vm} has no replica yet`);
    await applier.drain();
    if (applier.failed !== undefined) throw asStorageError(applier.failed, `replica of ${this.vm} failed`);
    const lsn = applier.applied;
    if (this.sync.at(lsn).state !== 'done')
      throw new PointError(
        PointErrorCode.RESYNCING,
        `${this.vm} is resyncing (initial copy not done): no recovery point can be cut`,
      );
    await this.exclusive.run(() => this.flushOnce());
    if (this.durableLsn < lsn)
      throw new SrError(ErrorCode.IO, `replica of ${this.vm} could not be made durable up to LSN ${lsn}; no point cut`);
    return replica.points.cut({
      lsn,
      generation: replica.info().generation,
      kind,
      time: new Date(),
      ...(round !== undefined ? { round } : {}),
    });
  }

  recordError(err: SrError): void {
    this.error = errorInfo(err);
    this.lastError = this.error;
  }

  /**
   * What keeps the VM from replicating, for `/health`: its replica cannot be opened or made durable
   * (`replica-store`), or its stream cannot be applied (`apply`). `undefined` while it replicates or
   * resyncs, and once it is failed over (its stream no longer matters).
   */
  trouble(): { kind: 'replica-store' | 'apply'; error: ErrorInfo } | undefined {
    const e = this.error;
    if (e === undefined || this.failoverState === 'failed-over' || this.failoverState === 'committed') return undefined;
    return { kind: this.openError !== undefined || isStorageCode(e.code) ? 'replica-store' : 'apply', error: e };
  }

  /**
   * One durability round: fsync the replica disks, persist the applied position, then confirm it.
   * Overlapping calls share rounds. Never rejects: a storage failure faults the stream instead.
   */
  flush(): Promise<void> {
    if (this.flushing !== undefined) {
      this.flushAgain = true;
      return this.flushing;
    }
    const run = async (): Promise<void> => {
      do {
        this.flushAgain = false;
        await this.exclusive.run(() => this.flushOnce());
      } while (this.flushAgain);
    };
    this.flushing = run()
      .catch((err: unknown) => this.log.error({ vm: this.vm, err: (err as Error).message }, 'flush failed'))
      .finally(() => (this.flushing = undefined));
    return this.flushing;
  }

  /** Waits for records in flight, then makes everything applied durable and confirms it. */
  async settle(): Promise<void> {
    await this.applier?.drain();
    await this.flush();
  }

  async close(): Promise<void> {
    await this.applying.run(() => Promise.resolve());
    await this.exclusive.run(async () => {
      await this.applier?.drain();
      await this.replica?.close();
    });
  }

  status(): VmStatus {
    const applied = this.applier?.applied ?? 0;
    return describeVm({
      vm: this.vm,
      replica: this.replica,
      applied,
      durable: this.durableLsn,
      confirmed: this.confirmedLsn,
      sync: this.replica === undefined ? { state: 'none', done: 0, total: 0 } : this.sync.at(applied),
      cacheStore: this.cacheStore,
      lag: this.lag.summary(),
      failover: this.failoverState,
      ...this.scans.facts(),
      ...(this.error !== undefined ? { error: this.error } : {}),
      ...(this.lastError !== undefined ? { lastError: this.lastError } : {}),
    });
  }

  private async flushOnce(): Promise<void> {
    const replica = this.replica;
    const applier = this.applier;
    if (replica === undefined || applier === undefined) return;
    // After a failed fsync a later one proves nothing about the pages it lost (their dirty state is
    // gone): nothing more is persisted or confirmed until the stream has been sent again.
    if (this.rewindToDurable || applier.failed !== undefined) return;
    const { generation } = replica.info();
    const lsn = applier.applied;
    const sync = this.sync.at(lsn);
    const persisted = replica.info();
    if (lsn < this.durableLsn) return;
    if (lsn > persisted.appliedLsn || !sameSync(sync, persisted.initialSync)) {
      this.bytesSinceFlush = 0;
      try {
        await replica.flush();
        await replica.savePosition({ appliedLsn: lsn, initialSync: sync });
      } catch (err) {
        const e = asStorageError(err, `replica of ${this.vm} could not be made durable`);
        this.recordError(e);
        this.rewindToDurable = true;
        this.log.error(
          { vm: this.vm, code: e.code, err: e.message },
          'replica flush failed; the stream will be resent from the durable position',
        );
        this.hooks.fault(this.vm, e);
        return;
      }
      this.sync.settle(lsn);
      this.durableLsn = lsn;
    }
    if (this.durableLsn > this.confirmedLsn && this.hooks.confirm(this.vm, generation, this.durableLsn))
      this.confirmedLsn = this.durableLsn;
  }

  /** Makes `replica` current at its persisted position (a fresh replica or a new generation). */
  private attach(replica: Replica): void {
    const info = replica.info();
    this.replica = replica;
    this.durableLsn = info.appliedLsn;
    this.confirmedLsn = 0;
    this.bytesSinceFlush = 0;
    this.rewindToDurable = false;
    this.sync.resetTo(info.initialSync);
    this.scans.reset();
    this.lag.clear();
    this.applier = new RecordApplier(replica, info.appliedLsn, {
      ...this.o,
      onApplied: (r) => {
        if (r.time !== undefined && r.time > 0) this.lag.add(Date.now() - r.time);
      },
    });
  }
}

function describe(disks: readonly DiskInfo[]): string {
  return disks.map((d) => `${d.id}(${d.size} B)`).join(', ');
}
