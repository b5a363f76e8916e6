export { Agent } from './agent.js';
export type { AgentConfig, DiskConfig, HealthOptions, ReplicationConfig } from './agent-config.js';
export type { AgentStatus } from './agent-status.js';
export { HealthCode } from './health.js';
export type { AgentHealth, HealthProblem } from './health.js';
export { FileBackend } from './backend/file-backend.js';
export { CaptureBackend, LsnSequence } from './backend/capture-filter.js';
export { FileJournal } from './journal/file-journal.js';
export type { FileJournalOptions } from './journal/file-journal-options.js';
export type { Journal, JournalStats } from './journal/journal.js';
export { applyRecord } from './backend/apply-record.js';
export { ReplicationGroup } from './group/replication-group.js';
export {
  DEFAULT_GROUP_PORT,
  DEFAULT_HOLD_TIMEOUT_MS,
  DEFAULT_MULTI_VM_FREQUENCY_MS,
  DEFAULT_PEER_LIMITS,
  MAX_HOLD_TIMEOUT_MS,
  parsePeers,
} from './group/group-config.js';
export type { GroupConfig, GroupPeer, PeerLimits } from './group/group-config.js';
export type { GroupStatus, RoundCounts } from './group/group-stats.js';
export { GroupCode } from './group/group-codes.js';
export { WriteGate } from './group/write-gate.js';
export type { HoldResult } from './group/write-gate.js';
export { WatchAgent } from './watch/watch-agent.js';
export {
  DEFAULT_WATCH_BLOCK_BYTES,
  DEFAULT_WATCH_DEBOUNCE_MS,
  DEFAULT_WATCH_MAX_DELAY_MS,
  DEFAULT_WATCH_RESCAN_INTERVAL_MS,
} from './watch/watch-config.js';
export type { WatchAgentConfig, WatchOptions } from './watch/watch-config.js';
export type { WatchAgentStatus, WatchStatus } from './watch/watch-status.js';
