import type { ImageFailure } from './backend/capture-filter.js';
import type { ModeStatus } from './bitmap/bitmap-mode.js';
import type { GenerationStatus } from './generation/generation-status.js';
import type { GroupStatus } from './group/group-stats.js';
import type { JournalStats } from './journal/journal.js';
import type { ReplicationStatus } from './replication/agent-replication.js';

/** What `GET /status` answers (and the ready line carries). */
export interface AgentStatus {
  readonly vm: string;
  /** The NBD listener, host:port. */
  readonly nbd: string;
  /** The last LSN handed out. */
  readonly lsn: number;
  /** LSN through which the journal and every image are on stable storage; redo starts after it. */
  readonly checkpointLsn: number;
  readonly journal: JournalStats;
  /** NBD connections open now. */
  readonly connections: number;
  /** NBD connections closed on accept because `maxConnections` were open, since the start. */
  readonly refusedConnections: number;
  /**
   * VM writes that waited at the journal's cap since the start. Only an agent without a generation
   * (its journal lets itself go) waits there; one with a generation goes to bitmap mode instead.
   */
  readonly stalledWrites: number;
  /** How the VM's writes reach the replica: `streaming`, `bitmap`, `resyncing` (absent without a generation). */
  readonly mode?: ModeStatus;
  readonly replication?: ReplicationStatus;
  /**
   * The replication generation: which one, when and why it began, the ones before, and one pending
   * (agent/README.md, "Generations"). Absent for an agent that never replicated.
   */
  readonly generation?: GenerationStatus;
  /** The VM's replication group, when it belongs to one (agent/README.md, "Replication groups"). */
  readonly group?: GroupStatus;
  /** Why writes are waiting, when they are. */
  readonly stalled?: string;
  /** Disks whose image failed (a journaled write or an fdatasync): they refuse writes until a restart replays the journal. */
  readonly imageFailures?: readonly ({ readonly disk: string } & ImageFailure)[];
}
