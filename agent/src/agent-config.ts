import type { BackoffOptions, Logger, ParsedToken } from '@site-recovery/shared';
import type { BackendFilter, NbdServerLimits } from '@site-recovery/shared/nbd';
import type { BitmapModeOptions } from './bitmap/bitmap-mode.js';
import type { GroupConfig } from './group/group-config.js';
import type { FileJournalOptions } from './journal/file-journal-options.js';
import type { ShipperLimits } from './replication/shipper-options.js';
import type { SumsOptions } from './replication/sums-exchange.js';

/** See AgentConfig.checkpointIntervalMs. */
export const DEFAULT_CHECKPOINT_INTERVAL_MS = 30_000;
/** See HealthOptions.disconnectedMs. */
export const DEFAULT_HEALTH_DISCONNECTED_MS = 60_000;
/** See HealthOptions.groupRoundsFailed. */
export const DEFAULT_HEALTH_GROUP_ROUNDS_FAILED = 3;

export interface DiskConfig {
  readonly id: string;
  readonly path: string;
}

export interface AgentConfig {
  readonly vm: string;
  readonly disks: readonly DiskConfig[];
  readonly nbdHost: string;
  /** 0 picks a free port. */
  readonly nbdPort: number;
  readonly dataDir: string;
  readonly journal?: FileJournalOptions;
  readonly nbdLimits?: Partial<NbdServerLimits>;
  /**
   * How often the images are fsynced and the checkpoint advanced. Default 30 s, the kernel's own
   * age for writing back dirty pages (vm.dirty_expire_centisecs): a checkpoint then mostly finds the
   * images already written, instead of forcing out blocks the VM is about to overwrite again. At 5 s
   * the forced writeback took about a quarter of this disk's bandwidth on sequential writes.
   *
   * The checkpoint bounds two things. Redo after a crash replays the journal from it (so at most one
   * interval of writes, and never more than the journal's cap). Shipped segments are released only
   * below it, so a checkpoint is also taken early whenever the journal passes half its cap and the
   * cache-store has acknowledged past the last one.
   */
  readonly checkpointIntervalMs?: number;
  /**
   * Replicate to a cache-store; without it the agent only captures into its journal. An agent whose
   * data dir has never replicated keeps its journal from the starting images (so `sr-journal replay`
   * can rebuild them) until the journal passes half its cap, and from then on lets go of the oldest
   * segments the images hold (below a checkpoint): its first replicated start begins a new generation
   * with a full copy and has no use for them. One that has replicated keeps them as the backlog for
   * its next replicated start, and stalls at the cap.
   */
  readonly replication?: ReplicationConfig;
  /**
   * A replication group of VMs whose recovery points are cut at one consistent moment
   * (docs/multi-vm.md). Its members' write replies are held during each round, for at most the
   * group's hold timeout.
   */
  readonly group?: GroupConfig;
  readonly health?: HealthOptions;
  /** Bitmap mode past the journal's cap, for a data dir with a replication generation (agent/src/bitmap/). */
  readonly bitmap?: BitmapOptions;
  /**
   * Spacing of attempts at a new generation begun at run time (continuity lost): a failed attempt is
   * retried after it, and a generation that is lost again soon after it began waits it before the
   * next. Default 1 s doubling to 5 min (generation/generation-switch.ts).
   */
  readonly generationRetry?: BackoffOptions;
  /**
   * Wraps each disk image below the capture point, as nbdkit filters do: fault injection for tests
   * (a failing write, read or fdatasync). Default none.
   */
  readonly imageFilter?: BackendFilter;
  readonly log: Logger;
}

export interface ReplicationConfig {
  /** ws:// or wss:// URL of the cache-store. */
  readonly url: string;
  /**
   * The agent token of this VM (role agent, `vm` equal to AgentConfig.vm), minted with the
   * cache-store's secret: every dial carries a fresh one-time proof of it. Absent: the upgrade carries
   * no credential, which only a cache-store running without authentication (`--insecure`) accepts.
   */
  readonly token?: ParsedToken;
  /**
   * PEM CA certificate(s) a wss:// cache-store's certificate must chain to. Absent: the system's CAs.
   * A certificate that does not verify is refused (never accepted unverified).
   */
  readonly tlsCa?: string | Buffer;
  /** Start a new generation (and a full initial copy) even if the data dir holds one. */
  readonly resync?: boolean;
  readonly shipper?: Partial<ShipperLimits>;
  /**
   * Spacing of the initial copy's retries after a failed attempt (a disk read error, say); each
   * retry resumes where the copy stopped. Default 1 s doubling to 60 s, half of it random.
   */
  readonly initialCopyRetry?: BackoffOptions;
  /**
   * The checksum resync of a new generation's initial copy: the block size compared, how long to wait
   * for the replica's sums, how often to ask again. Defaults: `DEFAULT_SUMS_OPTIONS` (4 KiB, 10 min, 3).
   */
  readonly sums?: Partial<SumsOptions>;
  /** App-consistent points: commands run around an APP marker every `frequencyMs`. */
  readonly appConsistent?: {
    readonly frequencyMs: number;
    readonly preSnapshot?: string;
    readonly postSnapshot?: string;
  };
}

/** When `GET /health` calls the agent unhealthy, beyond failures that are unhealthy at once. */
export interface HealthOptions {
  /**
   * The replication stream has been down (connecting, or waiting to reconnect) this long: the
   * cache-store is unreachable and the journal is growing towards its cap. Short outages are normal
   * (a cache-store restart), so they are not reported. Default 60 s.
   */
  readonly disconnectedMs?: number;
  /**
   * Group rounds that failed in a row (as this member saw them) before the health shows a warning
   * (the agent stays healthy: its own points continue). Default 3.
   */
  readonly groupRoundsFailed?: number;
}

/** How bitmap mode tracks and resyncs (agent/src/bitmap/); every field has a default. */
export interface BitmapOptions extends Pick<BitmapModeOptions, 'resumeBelowBytes' | 'pollMs' | 'resync'> {
  /**
   * Bytes of disk per bit of a new bitmap. Default 64 KiB (DEFAULT_BITMAP_CHUNK_BYTES says why); a
   * bitmap that exists keeps the granularity it was made with.
   */
  readonly chunkBytes?: number;
}
