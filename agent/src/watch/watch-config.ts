import { ErrorCode, SrError, type BackoffOptions, type Logger } from '@site-recovery/shared';
import type { DiskConfig, HealthOptions, ReplicationConfig } from '../agent-config.js';
import type { FileJournalOptions } from '../journal/file-journal-options.js';

/** See {@link WatchOptions.blockBytes}. */
export const DEFAULT_WATCH_BLOCK_BYTES = 64 * 1024;
/** See {@link WatchOptions.debounceMs}. */
export const DEFAULT_WATCH_DEBOUNCE_MS = 1000;
/** See {@link WatchOptions.maxDelayMs}. */
export const DEFAULT_WATCH_MAX_DELAY_MS = 30_000;
/** See {@link WatchOptions.rescanIntervalMs}. */
export const DEFAULT_WATCH_RESCAN_INTERVAL_MS = 10 * 60_000;
/** Block sizes a scan may compare at: what the wire's sums exchange allows, so they can be compared later. */
export const MIN_WATCH_BLOCK_BYTES = 4096;
export const MAX_WATCH_BLOCK_BYTES = 1024 * 1024;

/** How a watch-mode agent notices and ships changes. Every field has a default. */
export interface WatchOptions {
  /**
   * Bytes per compared block, a power of two from 4 KiB to 1 MiB. Default 64 KiB: a changed block is sent
   * whole, so a 4 KiB write costs 64 KiB on the wire; the persisted sums take 16 bytes a block (256 KiB
   * per GiB of disk), and hashing bigger blocks costs the same per byte. At 4 KiB the sums of a 1 TiB disk
   * would be 4 GiB.
   */
  readonly blockBytes?: number;
  /**
   * Quiet time after the last change event before a scan starts. Also what makes a scan clean: every
   * image's modification time must be at least this old when the scan starts, and unchanged when it
   * ends. Default 1 s.
   */
  readonly debounceMs?: number;
  /**
   * Longest a change waits for a scan while events keep coming: the scan then overlaps the writer (it is
   * not clean, so no point is cut from it) but the replica keeps up. Default 30 s.
   */
  readonly maxDelayMs?: number;
  /**
   * A scan runs at least this often without any event: writes through a shared mmap raise none (and
   * do not move the modification time until written back). Default 10 min.
   */
  readonly rescanIntervalMs?: number;
  /** Bytes read and hashed per step of a scan. Default 4 MiB. */
  readonly readBytes?: number;
  /**
   * How long a scan waits at its end for change events still on their way (inotify, then chokidar's
   * stat) before it calls itself clean. Default 50 ms.
   */
  readonly settleMs?: number;
  /**
   * During a long scan (the first one of a large disk), the journal is synced and the sums saved at most
   * this often, so a restart does not send everything again. Default 60 s.
   */
  readonly saveIntervalMs?: number;
  /** A progress marker of the first scan (the initial copy) every this many bytes. Default 64 MiB. */
  readonly markEveryBytes?: number;
  /** Spacing of retries after a failed scan (a read error, an image missing). Default 1 s doubling to 60 s. */
  readonly retry?: BackoffOptions;
}

/** A watch-mode agent: no NBD listener, the images are watched and their changes shipped by checksum. */
export interface WatchAgentConfig {
  readonly vm: string;
  readonly disks: readonly DiskConfig[];
  readonly dataDir: string;
  readonly journal?: FileJournalOptions;
  /** Required: watch mode exists to replicate. App-consistent points are refused (no write is ordered). */
  readonly replication: Omit<ReplicationConfig, 'appConsistent'>;
  readonly watch?: WatchOptions;
  readonly health?: HealthOptions;
  readonly log: Logger;
}

/** Every watch option with its default filled in. */
export type WatchLimits = Required<Omit<WatchOptions, 'retry'>> & Pick<WatchOptions, 'retry'>;

/** The options with their defaults; SR_BAD_OPTION for a block size the sums cannot use. */
export function watchLimits(o: WatchOptions = {}): WatchLimits {
  const blockBytes = o.blockBytes ?? DEFAULT_WATCH_BLOCK_BYTES;
  if (blockBytes < MIN_WATCH_BLOCK_BYTES || blockBytes > MAX_WATCH_BLOCK_BYTES || (blockBytes & (blockBytes - 1)) !== 0)
    throw new SrError(
      ErrorCode.BAD_OPTION,
      `watch block size ${blockBytes} must be a power of two from ${MIN_WATCH_BLOCK_BYTES} to ${MAX_WATCH_BLOCK_BYTES} bytes (e.g. 64K)`,
    );
  // Whole blocks per read, so that no block is split between two reads.
  const readBytes = Math.max(blockBytes, Math.floor((o.readBytes ?? 4 * 1024 * 1024) / blockBytes) * blockBytes);
  return {
    blockBytes,
    debounceMs: o.debounceMs ?? DEFAULT_WATCH_DEBOUNCE_MS,
    maxDelayMs: o.maxDelayMs ?? DEFAULT_WATCH_MAX_DELAY_MS,
    rescanIntervalMs: o.rescanIntervalMs ?? DEFAULT_WATCH_RESCAN_INTERVAL_MS,
    readBytes,
    settleMs: o.settleMs ?? 50,
    saveIntervalMs: o.saveIntervalMs ?? 60_000,
    markEveryBytes: o.markEveryBytes ?? 64 * 1024 * 1024,
    ...(o.retry !== undefined ? { retry: o.retry } : {}),
  };
}
