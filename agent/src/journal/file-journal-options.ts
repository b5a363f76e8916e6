import type { DirectAppendOptions } from './direct-append.js';

export interface FileJournalOptions {
  /** A segment is closed and a new one started once it reaches this size. Default 64 MiB. */
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

export const DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024;
export const DEFAULT_MAX_RECORD_BYTES = 32 * 1024 * 1024;
export const DEFAULT_INLINE_WRITE_MAX_BYTES = 1024 * 1024;
export const DEFAULT_JOURNAL_MAX_BYTES = 8 * 1024 * 1024 * 1024;
export const DEFAULT_DIRECT_WRITE_MIN_BYTES = 256 * 1024;
export const DEFAULT_TAIL_CACHE_BYTES = 32 * 1024 * 1024;
