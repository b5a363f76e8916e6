// The processor as a library: run one in a process of your own, plug in another replica store, plan
// failover placement, or drive the control API. The CLIs (cli/) are built on the same exports.

// Running a processor: options, status and health.
export { Processor, DEFAULT_CONFIRM_INTERVAL_MS } from './processor.js';
export type { ProcessorAuth, ProcessorConfig, ProcessorOptions, ProcessorStatus } from './processor.js';
export { DEFAULT_CONFIRM_BYTES } from './stream/vm-replication.js';
export type { PullerStatus } from './stream/puller.js';
export type { ErrorInfo, FailoverState, VmState, VmStatus } from './stream/vm-status.js';
export { HealthProblemCode, DEFAULT_CACHE_STORE_UNREACHABLE_MS } from './health.js';
export type { HealthProblem, HealthReport } from './health.js';

// The storage boundary: the replica store contract, its local-file implementation and recovery points.
export { sameDisks } from './replica/replica-store.js';
export type {
  InitialSync,
  InitialSyncState,
  MaterializePlan,
  NewPoint,
  Replica,
  ReplicaInfo,
  ReplicaPoints,
  ReplicaPosition,
  ReplicaStore,
} from './replica/replica-store.js';
export { FileReplicaStore, DEFAULT_INLINE_WRITE_MAX_BYTES } from './replica/file-replica-store.js';
export type { FileReplicaStoreOptions } from './replica/file-replica-store.js';
export { FilePointStore, DEFAULT_UNDO_BLOCK_SIZE } from './points/file-point-store.js';
export type { PointStoreOptions } from './points/file-point-store.js';
export type { DiskSource } from './points/undo-blocks.js';
export type {
  GroupPointRef,
  PointInfo,
  PointKind,
  RecoveryPoint,
  RoundFailure,
  RoundTag,
} from './points/recovery-point.js';
export * as names from './names.js';

// Per-VM policy: point schedule, retention, placement.
export { DEFAULT_VM_CONFIG, MAX_RETENTION_MS, MIN_FREQUENCY_MS } from './vm-config.js';
export type { SourceConfig, ThinningTier, VmConfig } from './vm-config.js';

// Multi-VM consistency groups: settings, rounds, group points.
export { DEFAULT_GROUP_CONFIG, MIN_MULTI_VM_FREQUENCY_MS } from './groups/group-config.js';
export type { GroupConfig } from './groups/group-config.js';
export { DEFAULT_MAX_OPEN_ROUNDS, DEFAULT_MAX_ENDED_ROUNDS } from './groups/group-tracker.js';
export type { GroupTrackerOptions } from './groups/group-tracker.js';
export type { GroupStatus, ReplicationGroupsOptions } from './groups/replication-groups.js';
export type { GroupPoint } from './groups/group-failover.js';

// Failover placement (Azure Site Recovery's rules) and what a failover writes.
export { planTarget, createTargetPlanner, DHCP } from './failover/target-resources.js';
export type {
  NetworkSpec,
  PlacementReasons,
  PlanTargetInput,
  RegionDefaults,
  SourcePlacement,
  SubnetSpec,
  TakenAddress,
  TargetOverrides,
  TargetPlacement,
  TargetPlannerOptions,
} from './failover/target-resources.js';
export type { ConfiguredPlacement, ResolvedTarget, TargetPlanner } from './failover/target-planner.js';
export type { GroupSplit, Manifest } from './failover/manifest.js';

// The control API: a client, and the codes its refusals carry.
export { ControlClient, ControlApiError } from './api/control-client.js';
export type {
  ControlClientAuth,
  GroupPointDoc,
  GroupStatusDoc,
  StatusDoc,
  VmConfigUpdate,
} from './api/control-client.js';
export { DEFAULT_MAX_PENDING_REFUSALS } from './api/audit-log.js';
export type { AuditAction, AuditOutcome } from './api/audit-log.js';
export { PointError, PointErrorCode } from './api/error-codes.js';
