import type { ChangeRecord } from '@site-recovery/shared';

/**
 * The agent's change log: the VM's write-type requests in LSN order.
 *
 * Contract every implementation passes (agent/test/journal-contract.ts):
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
  /** LSN of the last appended record; 0 when empty. */
  readonly lastLsn: number;
  /** LSN of the first retained record; `lastLsn + 1` when empty. */
  readonly firstLsn: number;
  append(record: ChangeRecord): Promise<void>;
  sync(): Promise<void>;
  read(from: number): AsyncIterable<ChangeRecord>;
  stats(): JournalStats;
  close(): Promise<void>;
}

export interface JournalStats {
  readonly firstLsn: number;
  readonly lastLsn: number;
  readonly syncedLsn: number;
  readonly segments: number;
  readonly bytes: number;
  readonly failed: string | undefined;
}
