import {
  SerialQueue,
  type SrError,
  type BackoffOptions,
  type ChangeRecord,
  type DiskInfo,
  type Logger,
  type Progress,
  type VmInfo,
} from '@site-recovery/shared';
import { ApplyPause } from './apply-pause.js';
import { applyBatchTo, type BatchContext } from './batch-apply.js';
import { CacheStorePosition } from './cache-store-position.js';
import { DurabilityRounds } from './durability-rounds.js';
import { GenerationGate, checkSameLayout, startGeneration, type GenerationGateOptions } from './generation-gate.js';
import { cutAtApplied } from './point-cut.js';
import { InitialSyncTracker, pointsAllowed } from './initial-copy-tracker.js';
import { LagStats } from './lag-stats.js';
import type { PointKind, RecoveryPoint, RoundTag } from '../points/recovery-point.js';
import type { GroupRecordHooks, MarkerTarget } from './markers.js';
import { ScanPoints } from './scan-points.js';
import { RecordApplier, type RecordApplierOptions } from './record-applier.js';
import { COPYING, type Replica, type ReplicaStore } from '../replica/replica-store.js';
import { asStorageError, errorInfo, isStorageCode } from './storage-error.js';
import {
  describeVm,
  troubleOf,
  type ErrorInfo,
  type FailoverState,
  type VmStatus,
  type VmTrouble,
} from './vm-status.js';

export interface VmReplicationOptions extends Omit<RecordApplierOptions, 'onApplied'>, GenerationGateOptions {
  /** Applied bytes after which a confirmation round starts before the interval is up. Default 64 MiB. */
  readonly confirmBytes?: number;
  /** Recent records the lag percentiles cover. Default 4096. */
  readonly lagWindow?: number;
  /**
   * Delays between attempts to apply again after the replica or its undo logs could not be written
   * or made durable (a full disk: SR_NO_SPACE). Default 1 s, doubling to 30 s, jitter 0.5.
   */
  readonly storageRetry?: BackoffOptions;
}

export const DEFAULT_CONFIRM_BYTES = 64 * 1024 * 1024;
const DEFAULT_LAG_WINDOW = 4096;

/** What a VM's replication needs from the rest of the processor. */
export interface VmReplicationHooks {
  /** Tells the cache-store that records up to `lsn` are durable; false when there is no stream to tell. */
  confirm(vm: string, generation: string, lsn: number): boolean;
  /**
   * Subscribes the VM again from the position `subscription` gives (after a storage pause, or once a
   * refused generation can be taken): the cache-store sends its stream again.
   */
  resubscribe(vm: string): void;
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
  private readonly rounds: DurabilityRounds;
  private readonly cacheStore = new CacheStorePosition();
  private error: ErrorInfo | undefined;
  private lastError: ErrorInfo | undefined;
  /** Generation changes, durability rounds and close, one at a time. */
  private readonly exclusive = new SerialQueue();
  private readonly confirmBytes: number;
  /** Serialises applying batches with cutting points: a cut sees no batch half-submitted. */
  private readonly applying = new SerialQueue();
  private failoverState: FailoverState = 'none';
  /** What a batch acts on (batch-apply.ts), with the applying queue held. */
  private readonly batches: BatchContext;
  /** Applying paused by a storage failure, retried with backoff. */
  private readonly pause: ApplyPause;
  private readonly gate: GenerationGate;
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
    this.pause = new ApplyPause(vm, log, o.storageRetry, () => hooks.resubscribe(vm));
    this.gate = new GenerationGate(vm, log, o);
    this.lag = new LagStats(o.lagWindow ?? DEFAULT_LAG_WINDOW);
    this.sync = new InitialSyncTracker(COPYING);
    this.rounds = new DurabilityRounds(
      {
        vm,
        log,
        sync: this.sync,
        replica: () => this.replica,
        applier: () => this.applier,
        confirm: (generation, lsn) => hooks.confirm(vm, generation, lsn),
        pause: (err) => this.pauseFor(err),
      },
      this.exclusive,
    );
    this.scans = new ScanPoints(vm, log);
    const markers: MarkerTarget = {
      vm,
      log,
      copiedAt: (lsn) => pointsAllowed(this.sync.at(lsn)),
      cut: (kind, round) => this.cutLocked(kind, round),
      drain: async () => this.applier?.drain(),
      watched: () => this.scans.watched,
      cleanScan: (lsn) => this.scans.atScan(lsn, this.sync.at(lsn).state === 'done', () => this.cutLocked('crash')),
    };
    this.batches = {
      vm,
      sync: this.sync,
      rounds: this.rounds,
      cacheStore: this.cacheStore,
      markers,
      group: hooks.group,
      replica: () => this.replica,
      applier: () => this.applier,
      pause: (err) => this.pauseFor(err),
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
    return this.cacheStore.lastLsnOf(this.generation);
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
    this.cacheStore.note(info);
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
      if (applier.failed !== undefined || this.rounds.rewindToDurable) {
        applier.rewind(this.rounds.durableLsn);
        this.sync.forgetAfter(this.rounds.durableLsn);
        this.rounds.rewindToDurable = false;
      }
    });
    return { generation: this.generation ?? null, from: (this.applier?.submitted ?? 0) + 1 };
  }

  /**
   * The cache-store starts a stream. A generation other than the replica's starts over at position 0
   * with the initial copy `copying`: the replica keeps its data with the same disk layout, and is
   * retired beside a new one with another (`Replica.reset`). A generation that cannot be taken
   * (generation-gate.ts) changes nothing, and its batches are ignored. Within one generation the disk
   * layout is fixed, so a different one is refused.
   */
  beginStream(generation: string, disks: readonly DiskInfo[]): Promise<void> {
    return this.exclusive.run(async () => {
      // A new stream (often a new connection) has not been told what is durable: the next round does.
      this.rounds.confirmedLsn = 0;
      const replica = this.replica;
      const info = replica?.info();
      if (info !== undefined && info.generation === generation) {
        checkSameLayout(this.vm, generation, info.disks, disks);
        this.gate.began(generation);
        this.pause.streamBegan();
        return;
      }
      if (!this.gate.admit(replica, generation, disks)) {
        this.pause.streamBegan();
        return;
      }
      try {
        await this.applier?.drain();
        const started = await startGeneration(this.store, this.vm, replica, generation, disks, this.log);
        this.gate.began(generation, started.fresh);
        this.attach(started.replica);
      } catch (err) {
        const e = asStorageError(err, `replica of ${this.vm} could not start generation ${generation}`);
        if (!isStorageCode(e.code)) throw err;
        this.pauseFor(e);
        return;
      }
      this.pause.streamBegan();
    });
  }

  /**
   * Applies a verified batch: records up to the applied position are skipped, the rest must follow
   * on from it (SR_SEQUENCE otherwise, before anything of the batch is applied).
   */
  applyBatch(generation: string, records: readonly ChangeRecord[], progress: Progress | undefined): Promise<void> {
    return this.applying.run(async () => {
      // Failed over: the source's later writes are not the VM any more.
      if (this.failoverState !== 'none') return;
      // Paused (until the stream begins again) or refused: nothing of the batch is applied or confirmed.
      if (this.pause.ignoringBatches || this.gate.refuses(generation)) return;
      if (!(await applyBatchTo(this.batches, generation, records, progress))) return;
      this.error = undefined;
      this.pause.progressed();
      if (this.rounds.bytesSinceFlush >= this.confirmBytes) void this.flush();
    });
  }

  private cutLocked(kind: PointKind, round?: RoundTag): Promise<RecoveryPoint> {
    const { vm, replica, applier, sync, rounds, exclusive } = this;
    return cutAtApplied({ vm, replica, applier, sync, rounds, exclusive }, kind, round);
  }

  recordError(err: SrError): void {
    this.error = errorInfo(err);
    this.lastError = this.error;
  }

  /** What keeps the VM from replicating, for `/health` (vm-status.ts). */
  trouble(): VmTrouble | undefined {
    return troubleOf({
      failover: this.failoverState,
      refused: this.gate.refused,
      paused: this.pause.info,
      error: this.error,
      opened: this.openError === undefined,
    });
  }

  /** Whether the replica can be the base of `generation`'s checksum resync (generation-gate.ts). */
  sumsBase(generation: string): { available: true } | { available: false; reason: string } {
    return this.gate.sumsBase(this.generation, generation);
  }

  /**
   * Bytes of the replica between two applied records: read with the applying queue held and no record
   * in flight, so a read holds applying up for that read only. `undefined` once the replica is at
   * another generation than `generation`.
   */
  readBetweenRecords(generation: string, disk: number, offset: number, length: number): Promise<Buffer | undefined> {
    return this.applying.run(async () => {
      const replica = this.replica;
      if (replica === undefined || this.generation !== generation || this.gate.refused !== undefined) return undefined;
      await this.applier?.drain();
      return replica.read(disk, offset, length);
    });
  }

  /**
   * One durability round: fsync the replica disks, persist the applied position, then confirm it.
   * Overlapping calls share rounds. Never rejects: a storage failure pauses applying instead. Also
   * where a refused generation is looked at again (this runs every confirm interval).
   */
  flush(): Promise<void> {
    if (this.gate.mayRetry(this.replica)) this.hooks.resubscribe(this.vm);
    return this.rounds.flush();
  }

  /** Waits for records in flight, then makes everything applied durable and confirms it. */
  async settle(): Promise<void> {
    await this.applier?.drain();
    await this.flush();
  }

  async close(): Promise<void> {
    this.pause.close();
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
      durable: this.rounds.durableLsn,
      confirmed: this.rounds.confirmedLsn,
      sync: this.replica === undefined ? { state: 'none', done: 0, total: 0 } : this.sync.at(applied),
      cacheStore: this.cacheStore.held,
      lag: this.lag.summary(),
      failover: this.failoverState,
      ...this.scans.facts(),
      ...(this.error !== undefined ? { error: this.error } : {}),
      ...(this.lastError !== undefined ? { lastError: this.lastError } : {}),
      ...(this.pause.info !== undefined ? { paused: this.pause.info } : {}),
      ...(this.gate.refused !== undefined ? { refused: this.gate.refused } : {}),
    });
  }

  /**
   * Applying stops at the durable position: what landed after it is applied again once the stream is
   * sent again (after a failed fsync nothing past it can be trusted; a marker whose point could not
   * be cut is acted on again), and nothing more is confirmed until then (apply-pause.ts).
   */
  private pauseFor(e: SrError): void {
    this.recordError(e);
    this.rounds.rewindToDurable = true;
    this.pause.pause(e);
  }

  /** Makes `replica` current at its persisted position (a fresh replica or a new generation). */
  private attach(replica: Replica): void {
    const info = replica.info();
    this.replica = replica;
    this.rounds.reset(info.appliedLsn);
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
