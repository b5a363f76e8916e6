import type { DirectAppendOptions } from './direct-append.js';

export interface FileJournalOptions {
  /**
   * A segment is closed and a new one started once it reaches this size. Default: follows the cap,
   * {@link segmentBytesFor}(maxBytes), which is 64 MiB for the default cap.
   */
  readonly segmentBytes?: number;
  /** Largest record payload accepted when reading back. Default 32 MiB (the NBD maximum). */
  readonly maxRecordBytes?: number;
  /**
   * Group writes up to this size go into the page cache synchronously from the event loop rather
   * than through the thread pool (see FileBackendOptions.inlineWriteMaxBytes for the trade-off).
   * Default 1 MiB; 0 sends every write through the thread pool.
   */
  readonly inlineWriteMaxBytes?: number;
  /**
   * Size cap of all segments together. Past it, `room()` makes writers wait until segments are
   * released (shipped and acknowledged), so the VM's writes stall instead of anything being dropped.
   * Default 8 GiB.
   */
  readonly maxBytes?: number;
  /**
   * Group writes of at least this size bypass the page cache (O_DIRECT, see DirectAppender), on
   * filesystems that allow it. Default 256 KiB; Infinity keeps every write buffered.
   */
  readonly directWriteMinBytes?: number;
  /**
   * Bytes of the newest journal content kept in memory for the shipper's reads (JournalTail).
   * Default 32 MiB; 0 reads everything back from the files.
   */
  readonly tailCacheBytes?: number;
  /**
   * LSN through which the journal is known to have been synced (the agent's checkpoint). Opening cuts
   * damage after it, in any segment, as the unsynced tail of a crash; damage at or before it is
   * refused. Default: only the newest segment's tail may be cut.
   */
  readonly syncedThroughLsn?: number;
  /** Options of the direct writer (staging size; a test hook for filesystems without O_DIRECT). */
  readonly direct?: DirectAppendOptions;
}

/** The segment size of a large cap (and of the default one, 8 GiB). */
export const DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024;
/** The smallest segment the agent accepts. */
export const MIN_SEGMENT_BYTES = 1024 * 1024;
/**
 * The fewest segments a cap must hold. Space comes back only in whole segments, below the checkpoint
 * and acknowledged, and never the one being written. The early checkpoint at half the cap must find a
 * closed segment below it while the other half takes the writes that arrive meanwhile: at 4 segments,
 * half the cap is 2 segments, one of them closed; with fewer, half the cap may hold none and the VM's
 * writes wait at the cap for the next timed checkpoint.
 */
export const MIN_SEGMENTS_PER_CAP = 4;
/**
 * Segments per cap when the segment size follows the cap: at the early checkpoint (half the cap) about
 * 3 closed segments can go at once while the other half of the cap takes the writes that arrive
 * meanwhile; at the minimum of 4, one segment at a time comes back and writes wait more often.
 */
export const SEGMENTS_PER_CAP = 8;
/** The smallest cap: {@link MIN_SEGMENTS_PER_CAP} segments of {@link MIN_SEGMENT_BYTES}, 4 MiB. */
export const MIN_JOURNAL_MAX_BYTES = MIN_SEGMENTS_PER_CAP * MIN_SEGMENT_BYTES;
export const DEFAULT_MAX_RECORD_BYTES = 32 * 1024 * 1024;
export const DEFAULT_INLINE_WRITE_MAX_BYTES = 1024 * 1024;
export const DEFAULT_JOURNAL_MAX_BYTES = 8 * 1024 * 1024 * 1024;
export const DEFAULT_DIRECT_WRITE_MIN_BYTES = 256 * 1024;
export const DEFAULT_TAIL_CACHE_BYTES = 32 * 1024 * 1024;

/**
 * The segment size for a cap when none is set: an eighth of the cap ({@link SEGMENTS_PER_CAP}) in whole
 * MiB, at least 1 MiB (so a 4 MiB cap still holds the minimum 4 segments) and at most 64 MiB (a larger
 * segment only makes each release coarser). 8 GiB → 64 MiB, 256 MiB → 32 MiB, 32 MiB → 4 MiB, 4 MiB → 1 MiB.
 */
export function segmentBytesFor(maxBytes: number): number {
  const eighth = Math.floor(maxBytes / SEGMENTS_PER_CAP / MIN_SEGMENT_BYTES) * MIN_SEGMENT_BYTES;
  return Math.min(DEFAULT_SEGMENT_BYTES, Math.max(MIN_SEGMENT_BYTES, eighth));
}
