import type { PointKind } from '../points/recovery-point.js';
import type { InitialSync } from '../replica/replica-store.js';

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
}
