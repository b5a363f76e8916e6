import type { DiskInfo, Logger, ParsedToken, Sums, SumsEnd } from '@site-recovery/shared';
import type { Journal } from '../journal/journal.js';
import type { DialRefusal } from './cache-store-dial.js';
import type { TokenBucketStatus } from './token-bucket.js';

export interface ShipperOptions {
  /** ws:// or wss:// URL of the cache-store. */
  readonly url: string;
  readonly vm: string;
  readonly generation: string;
  readonly disks: readonly DiskInfo[];
  readonly journal: Journal;
  readonly log: Logger;
  /** The agent token of this VM: a fresh proof of it goes with every dial. Absent: none is sent. */
  readonly token?: ParsedToken;
  /** PEM CA(s) a wss:// cache-store's certificate must chain to. Absent: the system's CAs. */
  readonly tlsCa?: string | Buffer;
  /**
   * Called with the cumulative LSN the cache-store has made durable: on each welcome, and on each ack
   * that advances it. Never more than this shipper sent it (an ack past that is refused as SR_PROTOCOL).
   * It goes down when a cache-store that lost records welcomes with less than it acknowledged before:
   * nothing above the new value may be released, and the shipper sends it again.
   */
  readonly onAcked: (lsn: number) => void;
  /**
   * Where the journal ended when the agent started without having had the cache-store's position
   * checked since (ReplicationState.unconfirmedFromLsn). Default: the journal's last LSN now.
   */
  readonly startLsn?: number;
  /** Told once, when the cache-store's position has been checked and the stream continues from it. */
  readonly onPositionConfirmed?: () => void;
  /**
   * Called when the processor's policy arrives (relayed by the cache-store). `multiVmFrequencyMs` is
   * absent when the processor sets none for the VM's group.
   */
  readonly onPolicy?: (appConsistentFrequencyMs: number, multiVmFrequencyMs: number | undefined) => void;
  /**
   * Called with the replica's block sums the processor sends back for this generation (checksum
   * resync). A returned promise stops the shipper reading its connection until it resolves: the sums
   * are written down slower than they arrive.
   */
  readonly onSums?: (m: Sums | SumsEnd) => Promise<void> | undefined;
  /** Told each time the request set by `Shipper.requestSums` is sent (again after every welcome). */
  readonly onSumsRequestSent?: () => void;
  /** The replication group of the VM, sent in the hello so the processor can send it the group's policy. */
  readonly group?: string;
  /** `watch` for a watch-mode agent, sent in the hello: the processor then cuts points only at clean scans. */
  readonly mode?: 'watch';
  readonly limits?: Partial<ShipperLimits>;
}

/** Limits of the shipper, with their defaults. */
export interface ShipperLimits {
  /** Payload bytes per batch (one journal read). Default 4 MiB. */
  readonly batchBytes: number;
  /** Records per batch. Default 16 384 (the wire allows 65 536). */
  readonly batchRecords: number;
  /**
   * Bytes sent and not yet acknowledged: a batch waits until it fits under this (one larger than it
   * goes alone). Default 64 MiB.
   */
  readonly inFlightBytes: number;
  /** First reconnect delay; doubles per failure up to `reconnectMaxMs`, with jitter. Default 200 ms. */
  readonly reconnectMinMs: number;
  /** Default 5 s. */
  readonly reconnectMaxMs: number;
  /** Time allowed for the connection and the welcome. Default 10 s. */
  readonly connectTimeoutMs: number;
  /**
   * Wire bytes per second sent at most (`sr-agent --max-bandwidth`), counted as whole batch frames;
   * the journal takes up what the VM writes faster. 0: no limit (the default).
   */
  readonly maxBytesPerSecond: number;
  /**
   * Bytes that may go at once under `maxBytesPerSecond`; batches are read no larger than this while a
   * limit is set, so the link is not filled in bursts of whole 4 MiB batches. 0 (the default): a
   * quarter second of the rate, at least 64 KiB and at most `batchBytes`.
   */
  readonly bandwidthBurstBytes: number;
}

export const DEFAULT_SHIPPER_LIMITS: ShipperLimits = {
  batchBytes: 4 * 1024 * 1024,
  batchRecords: 16_384,
  inFlightBytes: 64 * 1024 * 1024,
  reconnectMinMs: 200,
  reconnectMaxMs: 5000,
  connectTimeoutMs: 10_000,
  maxBytesPerSecond: 0,
  bandwidthBurstBytes: 0,
};

/** The burst of the bandwidth limit: ShipperLimits.bandwidthBurstBytes, or its default for the rate. */
export function bandwidthBurstBytes(limits: ShipperLimits): number {
  if (limits.bandwidthBurstBytes > 0) return limits.bandwidthBurstBytes;
  return Math.min(limits.batchBytes, Math.max(64 * 1024, Math.floor(limits.maxBytesPerSecond / 4)));
}

/** The bandwidth limit in the status: the limit (0: none), its burst, and whether sending waits on it. */
export interface BandwidthStatus extends TokenBucketStatus {
  /** `--max-bandwidth`, in bytes per second; 0: no limit. */
  readonly limitBytesPerSecond: number;
  /** 0 without a limit. */
  readonly burstBytes: number;
}

export interface ShipperStatus {
  readonly url: string;
  readonly state: 'connecting' | 'streaming' | 'waiting' | 'failed' | 'stopped';
  readonly ackedLsn: number;
  readonly sentLsn: number;
  readonly inFlightBytes: number;
  /** Sending waits for acknowledgements: the next batch would pass `limits.inFlightBytes`. */
  readonly windowFull: boolean;
  readonly bytesSent: number;
  readonly rawBytesSent: number;
  /** `held`: a batch is ready and waits for the bandwidth limit (the VM's writes do not). */
  readonly bandwidth: BandwidthStatus;
  readonly reconnects: number;
  readonly lastError: string | undefined;
  /**
   * The cache-store refuses this agent's credential (HTTP 401/403 to the upgrade, or an SR_AUTH error
   * to the hello), since `since`; cleared by the next welcome. The shipper keeps dialling (with
   * backoff): a token it revoked will not heal, but a fixed revocation file or secret may.
   */
  readonly refused?: { readonly since: string } & DialRefusal;
}
