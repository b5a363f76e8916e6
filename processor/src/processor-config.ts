import type https from 'node:https';
import type { BackoffOptions, Logger, ParsedToken, TokenVerifier, WireLimits } from '@site-recovery/shared';
import type { ControlServerLimits } from './api/control-server.js';
import type { FailoverOptions } from './failover/failover.js';
import type { TargetPlanner } from './failover/target-planner.js';
import type { ReplicationGroupsOptions } from './groups/replication-groups.js';
import type { PointSchedulerOptions } from './points/scheduler.js';
import type { ReplicaStore } from './replica/replica-store.js';
import type { PullerOptions } from './stream/puller-options.js';
import type { VmReplicationOptions } from './stream/vm-replication.js';
import type { VmConfig } from './vm-config.js';

/** The processor's tunables: the options of each of its parts, and its own. */
export interface ProcessorOptions
  extends
    VmReplicationOptions,
    Omit<PullerOptions, 'url' | 'token' | 'ca' | 'limits' | 'backoff'>,
    PointSchedulerOptions,
    FailoverOptions,
    ReplicationGroupsOptions,
    ControlServerLimits {
  /** Policy of VMs with no config of their own (each field can be overridden per VM over the API). */
  readonly defaultVmConfig?: VmConfig;
  /**
   * How often applied records are made durable (replica fsync + position persisted) and confirmed
   * to the cache-store. Confirming per batch would cost an fsync per batch; a round every interval
   * groups them. Default 200 ms.
   */
  readonly confirmIntervalMs?: number;
  /**
   * How long no connection to the cache-store may get as far as its VM list before `GET /health`
   * reports it (503, `SR_CACHE_STORE_UNREACHABLE`). Default 60 s.
   */
  readonly cacheStoreUnreachableMs?: number;
  readonly backoff?: BackoffOptions;
  readonly limits?: WireLimits;
}

export const DEFAULT_CONFIRM_INTERVAL_MS = 200;

/**
 * Authentication of a processor. Given at all, the control API also refuses a foreign Host header
 * (421) and a POST or PUT that is not JSON (415), and audits every action; absent, it serves anyone
 * (what --insecure gives, on loopback).
 */
export interface ProcessorAuth {
  /**
   * Checks the operator tokens the control API requires on every route but a bare `GET /health`:
   * tokens signed with this processor's own secret, never the cache-store's. Absent: no token needed.
   */
  readonly verifier?: TokenVerifier;
  /** A processor token signed with the cache-store's secret, proven afresh on every dial. */
  readonly cacheStoreToken?: ParsedToken;
  /** Host headers served besides the listen address (`--allowed-hosts`: HOST or HOST:PORT). */
  readonly allowedHosts?: readonly string[];
  /** The audit log. Default `<dataDir>/audit.log`; without a data dir, none. */
  readonly auditLog?: string;
}

export interface ProcessorConfig {
  readonly store: ReplicaStore;
  /** `ws://` or `wss://` address of the cache-store. */
  readonly cacheStoreUrl: string;
  readonly listenHost: string;
  /** 0 picks a free port. */
  readonly listenPort: number;
  /** Serve the control API over TLS with these options. */
  readonly tls?: https.ServerOptions;
  /** Verifies a `wss://` cache-store's certificate; default the system's CAs. */
  readonly cacheStoreCa?: Buffer;
  /** Absent: no authentication (see {@link ProcessorAuth}). */
  readonly auth?: ProcessorAuth;
  readonly log: Logger;
  readonly options?: ProcessorOptions;
  /**
   * Where VM configs, failover state and recovered disks go. Defaults to the store's directory when
   * it is a FileReplicaStore; without one the point and failover API refuses.
   */
  readonly dataDir?: string;
  /** Target placement for failovers (target-resources.ts `planTarget` plugs in here). */
  readonly targetPlanner?: TargetPlanner;
}
