import type { PointKind } from '../points/recovery-point.js';
import type { InitialSync, Replica } from '../replica/replica-store.js';
import { syncPercent } from './initial-copy-tracker.js';

// How a VM's replication looks from outside: the processor's status JSON and the sr CLI read these.

export interface ErrorInfo {
  readonly code: string;
  readonly message: string;
  readonly at: string;
}

export type VmState = 'replicating' | 'resyncing' | 'error' | 'failed-over' | 'committed';

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
  readonly state: VmState;
  /** While `state` is 'error': "CODE: message". */
  readonly error?: string;
  /** While `state` is 'error': the stable code alone. */
  readonly errorCode?: string;
  /** The most recent error, kept after the VM recovers. */
  readonly lastError?: ErrorInfo;
  /** Recovery points held. */
  readonly points: number;
  readonly latestPoint: { id: string; time: string; lsn: number; kind: PointKind } | null;
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
}

/** The status document of one VM. A failover state wins over an error, an error over the initial copy. */
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
      : f.error !== undefined
        ? 'error'
        : f.sync.state === 'done'
          ? 'replicating'
          : 'resyncing';
  const points = f.replica?.points.list() ?? [];
  const latest = points.at(-1);
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
    state,
    ...(f.error !== undefined ? { error: `${f.error.code}: ${f.error.message}`, errorCode: f.error.code } : {}),
    ...(f.lastError !== undefined ? { lastError: f.lastError } : {}),
    points: points.length,
    latestPoint: latest !== undefined ? { id: latest.id, time: latest.time, lsn: latest.lsn, kind: latest.kind } : null,
    failover: f.failover,
    ...(f.watch !== undefined ? { mode: 'watch' as const, watch: f.watch } : {}),
  };
}
