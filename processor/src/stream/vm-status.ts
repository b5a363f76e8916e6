import type { PointKind } from '../points/recovery-point.js';
import type { InitialSync, Replica, RetiredReplicaInfo } from '../replica/replica-store.js';
import type { PauseInfo } from './apply-pause.js';
import type { RefusedGeneration } from './generation-gate.js';
import { pointsAllowed, resyncPercent, syncPercent } from './initial-copy-tracker.js';
import { isStorageCode } from './storage-error.js';

// How a VM's replication looks from outside: the processor's status JSON and the sr CLI read these.

export interface ErrorInfo {
  readonly code: string;
  readonly message: string;
  readonly at: string;
}

/**
 * `paused`: the replica's storage failed (a full disk, an I/O error) and applying waits to retry;
 * `refused`: the source's newest generation cannot be taken (its stream is not applied).
 */
export type VmState = 'replicating' | 'resyncing' | 'error' | 'paused' | 'refused' | 'failed-over' | 'committed';

/** Where a VM's (real) failover stands. */
export type FailoverState = 'none' | 'in-progress' | 'failed-over' | 'committed';

export interface VmStatus {
  readonly vm: string;
  readonly generation: string | null;
  readonly disks: { id: string; size: number; path: string }[];
  readonly appliedLsn: number;
  readonly durableLsn: number;
  readonly confirmedLsn: number;
  readonly cacheStoreLastLsn: number | null;
  readonly pendingRecords: number;
  readonly lagMs: { p50: number | null; p99: number | null; samples: number };
  readonly initialSync: InitialSync & { percent: number };
  /**
   * While the regions the agent wrote in bitmap mode are resynced (`state` 'resyncing', no points cut):
   * bytes left, the most there were, and the percentage done.
   */
  readonly resync?: { readonly remaining: number; readonly total: number; readonly percent: number };
  readonly state: VmState;
  /** While `state` is 'error': "CODE: message". */
  readonly error?: string;
  /** While `state` is 'error': the stable code alone. */
  readonly errorCode?: string;
  /** The most recent error, kept after the VM recovers. */
  readonly lastError?: ErrorInfo;
  /** While `state` is 'paused': why, since when, and when the next attempt starts. */
  readonly paused?: PauseInfo;
  /** While `state` is 'refused': the generation not taken, its disks, and why. */
  readonly refused?: RefusedGeneration;
  /** Recovery points held, those of retired replicas included. */
  readonly points: number;
  readonly latestPoint: { id: string; time: string; lsn: number; kind: PointKind; generation: string } | null;
  /** Older replicas (other disk layouts) kept for their points, oldest first. */
  readonly retiredReplicas: RetiredReplicaInfo[];
  readonly failover: FailoverState;
  /** Only when `mode` is 'watch'. */
  readonly mode?: 'watch';
  /**
   * A watch-mode VM's points: the newest clean-scan marker applied (null: none in this generation), and
   * whether the schedule waits for the next one to cut a point.
   */
  readonly watch?: WatchFacts;
}

export interface WatchFacts {
  readonly lastCleanScanLsn: number | null;
  readonly pointWanted: boolean;
}

/** What keeps a VM from replicating, as `/health` names it. */
export interface VmTrouble {
  readonly kind: 'replica-store' | 'disk-full' | 'apply' | 'refused';
  readonly error: ErrorInfo;
}

/**
 * A refused generation, then applying paused by its storage (`disk-full` or `replica-store`), then a
 * replica that cannot be opened (`replica-store`) or a stream that cannot be applied (`apply`);
 * `undefined` while the VM replicates or resyncs, and once it is failed over (its stream no longer matters).
 */
export function troubleOf(f: {
  readonly failover: FailoverState;
  readonly refused: RefusedGeneration | undefined;
  readonly paused: PauseInfo | undefined;
  readonly error: ErrorInfo | undefined;
  /** Whether the replica (if any) could be opened. */
  readonly opened: boolean;
}): VmTrouble | undefined {
  if (f.failover === 'failed-over' || f.failover === 'committed') return undefined;
  const r = f.refused;
  if (r !== undefined) return { kind: 'refused', error: { code: r.code, message: r.message, at: r.at } };
  const p = f.paused;
  if (p !== undefined) return { kind: p.code === 'SR_NO_SPACE' ? 'disk-full' : 'replica-store', error: p };
  const e = f.error;
  if (e === undefined) return undefined;
  return { kind: !f.opened || isStorageCode(e.code) ? 'replica-store' : 'apply', error: e };
}

/** What {@link describeVm} is given: one VM's replication as it stands. */
export interface VmFacts {
  readonly vm: string;
  readonly replica: Replica | undefined;
  readonly applied: number;
  readonly durable: number;
  readonly confirmed: number;
  /** Where the initial copy stands at `applied`. */
  readonly sync: InitialSync;
  /** The cache-store's last word on the VM's stream. */
  readonly cacheStore: { readonly generation: string; readonly firstLsn: number; readonly lastLsn: number } | undefined;
  readonly lag: VmStatus['lagMs'];
  readonly failover: FailoverState;
  /** Present for a VM whose agent watches its images. */
  readonly watch?: WatchFacts;
  readonly error?: ErrorInfo;
  readonly lastError?: ErrorInfo;
  readonly paused?: PauseInfo;
  readonly refused?: RefusedGeneration;
}

/**
 * The status document of one VM. A failover state wins over a refused generation, that over a pause,
 * a pause over an error, an error over the initial copy.
 */
export function describeVm(f: VmFacts): VmStatus {
  const info = f.replica?.info();
  const cs = f.cacheStore;
  // Records the cache-store holds beyond the replica (all of them for a generation not begun here).
  const pending =
    cs === undefined
      ? 0
      : Math.max(0, cs.lastLsn - (cs.generation === info?.generation ? f.applied : Math.max(0, cs.firstLsn - 1)));
  const state: VmState =
    f.failover === 'failed-over' || f.failover === 'committed'
      ? f.failover
      : f.refused !== undefined
        ? 'refused'
        : f.paused !== undefined
          ? 'paused'
          : f.error !== undefined
            ? 'error'
            : pointsAllowed(f.sync)
              ? 'replicating'
              : 'resyncing';
  const points = f.replica?.points.list() ?? [];
  const latest = points.at(-1);
  const shown = f.refused ?? f.error;
  return {
    vm: f.vm,
    generation: info?.generation ?? null,
    disks: (info?.disks ?? []).map((d, i) => ({ id: d.id, size: d.size, path: f.replica!.locate(i) })),
    appliedLsn: f.applied,
    durableLsn: f.durable,
    confirmedLsn: f.confirmed,
    cacheStoreLastLsn: cs?.lastLsn ?? null,
    pendingRecords: pending,
    lagMs: f.lag,
    initialSync: { ...f.sync, percent: syncPercent(f.sync) },
    ...(f.sync.resync !== undefined ? { resync: { ...f.sync.resync, percent: resyncPercent(f.sync.resync) } } : {}),
    state,
    ...(shown !== undefined ? { error: `${shown.code}: ${shown.message}`, errorCode: shown.code } : {}),
    ...(f.lastError !== undefined ? { lastError: f.lastError } : {}),
    ...(f.paused !== undefined ? { paused: f.paused } : {}),
    ...(f.refused !== undefined ? { refused: f.refused } : {}),
    points: points.length,
    latestPoint:
      latest !== undefined
        ? { id: latest.id, time: latest.time, lsn: latest.lsn, kind: latest.kind, generation: latest.generation }
        : null,
    retiredReplicas: [...(f.replica?.retired() ?? [])],
    failover: f.failover,
    ...(f.watch !== undefined ? { mode: 'watch' as const, watch: f.watch } : {}),
  };
}
