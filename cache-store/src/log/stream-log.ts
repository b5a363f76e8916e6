import type { DiskInfo, SourceMode, SrError } from '@site-recovery/shared';

/** One batch message of a stream, exactly as the agent sent it, with the LSN range it carries. */
export interface StoredFrame {
  /** LSN of the frame's first record. */
  readonly first: number;
  /** LSN of its last record (`first + count - 1`). */
  readonly last: number;
  /** The encoded batch message; served back byte for byte. */
  readonly frame: Buffer;
}

/** Told about a log's progress; called synchronously, in order, from the log's writer. */
export interface StreamLogWatcher {
  /** `frames` (in LSN order) became durable; every LSN up to `durableLsn` now is. */
  durable(frames: readonly StoredFrame[], durableLsn: number): void;
  /** Storage failed; nothing appended after `durableLsn` of the error's time will become durable. */
  failed(err: SrError): void;
}

export interface StreamLogStats {
  readonly vm: string;
  readonly generation: string;
  readonly disks: readonly DiskInfo[];
  readonly firstLsn: number;
  readonly durableLsn: number;
  readonly appliedLsn: number;
  readonly segments: number;
  readonly bytes: number;
  /** Why the log takes no appends, while it does not. */
  readonly failed: string | undefined;
  /** The stable code of that failure (SR_NO_SPACE, SR_IO). */
  readonly failedCode?: string;
}

/**
 * The durable record stream of one VM and one generation, held for the processor until it confirms
 * the records applied. A log's VM, generation and disks never change; a new generation is a new log
 * ({@link StreamStore.openGeneration}).
 *
 * Contract every implementation passes (cache-store/test/stream-log-contract.ts):
 * - `append` takes frames whose `first` is exactly `appendedLsn + 1`; anything else throws
 *   SR_SEQUENCE and changes nothing. It returns at once; the frame becomes durable on its own soon
 *   after, and frames appended while earlier ones are being made durable share the next sync
 *   (group commit). Watchers hear of frames only once they are durable, never before.
 * - `sync` resolves once everything appended before the call is durable, with the durable LSN.
 * - `read(from)` yields, in LSN order, every retained durable frame that holds an LSN >= `from`
 *   (the first may start before `from`), byte for byte as appended, up to the durable LSN reached
 *   while it runs, then ends. `from` below `firstLsn` throws SR_SEQUENCE, as does a read that
 *   finds its records released meanwhile.
 * - `release(lsn)` records that everything up to `lsn` is applied downstream (durably, before it
 *   resolves) and may drop stored frames whose every record is <= `lsn`; frames still being
 *   appended to (the newest part) stay. Lower values than an earlier release change nothing.
 * - After a storage failure the log refuses appends (SR_NO_SPACE / SR_IO) and tells its watchers;
 *   what was durable before stays durable. `resume` drops what never became durable and takes
 *   appends again from `durableLsn + 1`.
 * - `setGroup` records the VM's replication group (or none) durably before it resolves; a new
 *   generation starts with none (its agent's hello names it again). `setMode` does the same for the
 *   agent's mode, and neither changes what the other recorded.
 * - Reopening the same storage yields the same generation, disks, group, applied LSN and every durable
 *   frame; a torn tail (a crash mid-append) is dropped, damage to durable data refuses to open with
 *   SR_JOURNAL_CORRUPT and says where.
 */
export interface StreamLog {
  readonly vm: string;
  readonly generation: string;
  readonly disks: readonly DiskInfo[];
  /** LSN of the first retained record; `durableLsn + 1` when nothing is retained. */
  readonly firstLsn: number;
  /** LSN of the last appended record, durable or not; 0 when none. */
  readonly appendedLsn: number;
  /** Every record up to this LSN is durable; 0 when none. */
  readonly durableLsn: number;
  /** The highest LSN released as applied downstream. */
  readonly appliedLsn: number;
  /** Bytes of frames appended but not yet durable (what a writer may pile up). */
  readonly pendingBytes: number;
  /** The replication group its agent last named; `undefined` for none. */
  readonly group: string | undefined;
  /** The mode its agent last named (`watch`); `undefined` for none (`nbd`). */
  readonly mode: SourceMode | undefined;

  append(frame: StoredFrame): void;
  sync(): Promise<number>;
  /**
   * Prepares the log for a new writer: waits until everything appended is durable or, after a
   * storage failure, drops what is not and accepts appends again. Resolves with the durable LSN,
   * after which the writer continues; rejects when storage still fails.
   */
  resume(): Promise<number>;
  read(from: number): AsyncIterable<StoredFrame>;
  release(lsn: number): Promise<void>;
  /** Records the VM's replication group (see the contract); resolves once it is durable. */
  setGroup(group: string | undefined): Promise<void>;
  /** Records the agent's mode (see the contract); resolves once it is durable. */
  setMode(mode: SourceMode | undefined): Promise<void>;
  /** Registers a watcher; returns the function that removes it. */
  watch(watcher: StreamLogWatcher): () => void;
  stats(): StreamLogStats;
  /** Waits for appended frames to become durable (unless storage failed), then releases resources. */
  close(): Promise<void>;
}

/**
 * Where the cache-store keeps its streams: one {@link StreamLog} per VM, the VM's current generation.
 *
 * Contract (cache-store/test/stream-log-contract.ts):
 * - Opening the store opens every VM's log it holds; `logs()` lists them and `get` finds one.
 * - `openGeneration(vm, generation, disks)` returns the VM's log when its generation matches;
 *   otherwise it closes the old log, drops its records, and returns a new empty log (durable LSN 0)
 *   that replaces it, also across a crash at any step. Calls for one VM run one at a time.
 * - `checkWritable` resolves `undefined` while the storage takes writes, and leaves no VM behind.
 * - `close` closes every log.
 */
/** A VM whose stored stream failed validation when the store opened; the other VMs are unaffected. */
export interface DamagedStream {
  readonly vm: string;
  /** The generation its meta file names, when that file could still be read. */
  readonly generation?: string;
  readonly error: string;
}

export interface StreamStore {
  logs(): readonly StreamLog[];
  get(vm: string): StreamLog | undefined;
  /**
   * VMs set aside as damaged. Their agents are refused (SR_JOURNAL_CORRUPT) until one opens a new
   * generation, which replaces the damaged data.
   */
  damaged(): readonly DamagedStream[];
  openGeneration(vm: string, generation: string, disks: readonly DiskInfo[]): Promise<StreamLog>;
  /**
   * Checks that the storage takes a small durable write now, for `GET /health`: a full disk or a
   * read-only one shows here before an agent's append meets it. Resolves with the error the write
   * failed with (SR_NO_SPACE, SR_IO) or `undefined`; never rejects.
   */
  checkWritable(): Promise<SrError | undefined>;
  close(): Promise<void>;
}
