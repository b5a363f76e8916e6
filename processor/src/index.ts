export { Processor, DEFAULT_CONFIRM_INTERVAL_MS } from './processor.js';
export type { ProcessorConfig, ProcessorOptions, ProcessorStatus } from './processor.js';
export { FileReplicaStore, DEFAULT_INLINE_WRITE_MAX_BYTES } from './replica/file-replica-store.js';
export type { FileReplicaStoreOptions } from './replica/file-replica-store.js';
export { sameDisks } from './replica/replica-store.js';
export type {
  InitialSync,
  InitialSyncState,
  Replica,
  ReplicaInfo,
  ReplicaPosition,
  ReplicaStore,
} from './replica/replica-store.js';
export { RecordApplier } from './stream/record-applier.js';
export type { ApplyTarget, RecordApplierOptions } from './stream/record-applier.js';
export { Puller } from './stream/puller.js';
export type { PullerOptions, PullerStatus, VmDirectory } from './stream/puller.js';
export { VmReplication, DEFAULT_CONFIRM_BYTES } from './stream/vm-replication.js';
export type { ErrorInfo, VmReplicationOptions, VmState, VmStatus } from './stream/vm-replication.js';
export { ControlServer } from './api/control-server.js';
export type { ControlServerOptions } from './api/control-server.js';
export { InitialSyncTracker, syncPercent } from './stream/initial-copy-tracker.js';
export { LagStats } from './stream/lag-stats.js';
export * as names from './names.js';
export {
  planTarget,
  createTargetPlanner,
  parseCidr,
  parseIpv4,
  formatIpv4,
  DHCP,
  UNKNOWN_SOURCE,
} from './failover/target-resources.js';
export type {
  ConfiguredPlacement,
  NetworkSpec,
  PlacementReasons,
  TargetPlannerOptions,
  PlanTargetInput,
  RegionDefaults,
  SourcePlacement,
  SubnetSpec,
  TargetOverrides,
  TargetPlacement,
} from './failover/target-resources.js';
export { parseDuration, formatDuration } from '@site-recovery/shared';
export { ControlClient, ControlApiError } from './api/control-client.js';
export type { Manifest, RecoveryPoint, VmConfigUpdate } from './api/control-client.js';
export { FilePointStore, DEFAULT_UNDO_BLOCK_SIZE } from './points/file-point-store.js';
export type { PointStoreOptions, DiskSource } from './points/file-point-store.js';
export type { MaterializePlan, NewPoint, ReplicaPoints } from './replica/replica-store.js';
export type { PointInfo, PointKind, RecoveryPoint as StoredRecoveryPoint } from './points/recovery-point.js';
export { UndoLog } from './points/undo-log.js';
export { pointsToPrune } from './points/retention.js';
export type { RetentionPolicy } from './points/retention.js';
export { DEFAULT_VM_CONFIG, MAX_RETENTION_MS, MIN_FREQUENCY_MS } from './vm-config.js';
export type { VmConfig, ThinningTier } from './vm-config.js';
export { FailoverService, defaultTargetPlanner } from './failover/failover.js';
export type { Manifest as FailoverManifest, ResolvedTarget, TargetPlanner } from './failover/failover.js';
export { PointError, PointErrorCode } from './api/error-codes.js';
export { PointScheduler } from './points/scheduler.js';
export type { FailoverState } from './stream/vm-replication.js';
