import type { ChangeRecord } from '@site-recovery/shared';

/**
 * The agent's change log: the VM's write-type requests in LSN order.
 *
 * Contract every implementation passes (agent/test/journal/journal-contract.ts):
 * - `append` takes records with consecutive LSNs (each exactly one more than the last); anything
 *   else is refused with SR_JOURNAL_CORRUPT and changes nothing. It resolves once the record would
 *   survive a crash of this process (written to the OS), not necessarily a power loss.
 * - `sync` resolves once every record appended before the call is on stable storage.
 * - `read(from)` yields every retained record with LSN >= `from`, in LSN order, each verified.
 * - After reopening, `lastLsn` is the LSN of the last whole, valid record; a torn tail is dropped.
 * - After `append` or `sync` has failed once, the journal refuses further appends (it cannot
 *   prove it still holds a gapless sequence) until it is reopened.
 */
export interface Journal {
  /**
   * Records from `from` on, as they are written: `next` resolves with the records available
   * (at least one, at most about `maxBytes` of payload, each verified), waiting if there are none.
   */
  cursor(from: number): JournalCursor;
  /** Drops whole segments whose records are all <= `lsn` (never the segment being written). */
  releaseThrough(lsn: number): Promise<void>;
  /**
   * `undefined` while the journal is under its size cap; otherwise a promise that resolves once
   * released segments have brought it back under. Writers wait on it: past the cap the VM's
   * writes stall rather than anything being dropped.
   */
  room(): Promise<void> | undefined;
  /** Whether the journal is at its size cap now (what `room()` would wait on), without waiting. */
  readonly atCap: boolean;
  /**
   * Ends every wait in `room()`, and any later one, with SR_SHUTTING_DOWN: a writer stalled at the cap
   * must not keep the agent from stopping. The stalled write took no LSN and was never journaled; its
   * caller answers it with the error, so nothing acknowledged is lost. Appends still work until `close`.
   */
  stopWaiting(): void;
  /** LSN of the last appended record; 0 when empty. */
  readonly lastLsn: number;
  /** LSN of the first retained record; `lastLsn + 1` when empty. */
  readonly firstLsn: number;
  /**
   * Appends `record` under its LSN (the next one). Resolves once it is written, not synced. Its
   * `data` is written from where it lies, possibly straight to the disk (O_DIRECT), so the caller
   * must leave it unchanged until the promise settles.
   */
  append(record: ChangeRecord): Promise<void>;
  sync(): Promise<void>;
  read(from: number): AsyncIterable<ChangeRecord>;
  stats(): JournalStats;
  close(): Promise<void>;
}

export interface JournalCursor {
  /**
   * The next records, about `maxBytes` of them (at least one when any is written). Their payloads
   * may be views into memory the cursor reuses: they are valid until the next call to `next`.
   */
  next(maxBytes: number): Promise<ChangeRecord[]>;
  /** Ends a pending `next` with an empty array. */
  close(): void;
}

export interface JournalStats {
  readonly firstLsn: number;
  readonly lastLsn: number;
  readonly syncedLsn: number;
  readonly segments: number;
  readonly bytes: number;
  readonly failed: string | undefined;
  /** Writers are waiting because the journal reached its size cap. */
  readonly stalled: boolean;
  readonly maxBytes: number;
  /** Size at which a segment is closed (set, or following the cap). */
  readonly segmentBytes: number;
  /** Large group writes bypass the page cache: false when turned off or the filesystem refused O_DIRECT. */
  readonly directWrites: boolean;
}
