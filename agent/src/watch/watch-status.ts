import { HealthCode, healthOf, type AgentHealth } from '../health.js';
import type { JournalStats } from '../journal/journal.js';
import type { ReplicationStatus } from '../replication/agent-replication.js';
import type { ScanReport } from './image-scan.js';

/** What `GET /status` answers for a watch-mode agent (and its ready line carries). */
export interface WatchAgentStatus {
  readonly vm: string;
  /** How the agent sees the VM's writes: by watching its images, since the agent started. */
  readonly mode: { readonly state: 'watch'; readonly since: string };
  /** The last LSN handed out. */
  readonly lsn: number;
  readonly journal: JournalStats;
  readonly replication?: ReplicationStatus;
  readonly watch: WatchStatus;
}

export interface WatchStatus {
  readonly disks: readonly { readonly id: string; readonly path: string; readonly size: number }[];
  readonly blockBytes: number;
  readonly debounceMs: number;
  readonly maxDelayMs: number;
  readonly rescanIntervalMs: number;
  /**
   * `scanning`; `pending`: a change waits for its scan (the debounce, or a retry); `idle`: nothing seen
   * since the last scan; `failed`: the last scan failed and the next waits for `failure.nextRetryAt`.
   */
  readonly state: 'scanning' | 'pending' | 'idle' | 'failed';
  /** The first change not yet covered by a scan. */
  readonly pendingSince?: string;
  /** Scans ended since the start, and how many of them were clean. */
  readonly scans: number;
  readonly cleanScans: number;
  readonly lastScan?: ScanReport;
  /**
   * The newest clean scan: `lsn` is the SCAN marker the replica stands at the image's state of that scan
   * (the marker of an earlier clean scan when nothing changed since it).
   */
  readonly lastCleanScan?: { readonly endedAt: string; readonly lsn: number; readonly blocksChanged: number };
  readonly failure?: ScanFailure;
  /** The last new generation begun while running (a disk resized), and why. */
  readonly newGeneration?: { readonly at: string; readonly reason: string };
}

export interface ScanFailure {
  /** Stable code: an SR_ code, or the system's (ENOENT, EIO, ...). */
  readonly code: string;
  readonly message: string;
  /** Scans that failed in a row. */
  readonly attempts: number;
  readonly at: string;
  readonly nextRetryAt: string;
}

/** The fronted agent's judgement of the journal and the stream, and the scans' own failure. */
export function watchHealthOf(status: WatchAgentStatus, o: { readonly disconnectedMs: number }): AgentHealth {
  const base = healthOf(status, o);
  const f = status.watch.failure;
  if (f === undefined) return base;
  const problem = {
    code: HealthCode.WATCH_SCAN_FAILING,
    message:
      `the last ${f.attempts} scan(s) of the images failed (${f.code}: ${f.message}); nothing new is shipped ` +
      `until a scan reads them again (next attempt at ${f.nextRetryAt}). Check that every --disk path exists and is readable`,
  };
  return { ...base, ok: false, problems: [...base.problems, problem] };
}
