/**
 * Why a replication generation began. A generation is one continuous stream of the VM; the agent starts
 * a new one whenever it cannot prove that the stream it would send continues the one the replica holds
 * (DESIGN.md invariant 5). Each cause is a stable string for status and alerts.
 */
export const GenerationCause = {
  /** The data dir held no generation: a first replicated start, or a data dir that was lost. */
  NEW_DATA_DIR: 'new-data-dir',
  /** An operator asked for it (`--resync`). */
  OPERATOR: 'operator-resync',
  /** A crash cut the journal's tail (torn or damaged records): the images may hold writes it lost. */
  JOURNAL_LOST_RECORDS: 'journal-lost-records',
  /** The journal is damaged where it had been synced (found at open, or by the shipper reading it). */
  JOURNAL_DAMAGED: 'journal-damaged',
  /** The journal failed (an I/O error, its disk full) and took no more writes. */
  JOURNAL_FAILED: 'journal-failed',
  /** The cache-store holds records of this generation past the journal's end: a crash cut them. */
  CACHE_STORE_AHEAD: 'cache-store-ahead',
  /** The cache-store holds less than the journal still starts at: the records between are gone. */
  CACHE_STORE_BEHIND: 'cache-store-behind',
  /** The cache-store refuses the stream because what it stored of this generation is damaged. */
  CACHE_STORE_DAMAGED: 'cache-store-damaged',
  /** The dirty-region bitmap cannot be trusted, so what changed since the journal's end is unknown. */
  BITMAP_UNTRUSTED: 'bitmap-untrusted',
  /** A disk's size changed while the agent was stopped. */
  DISK_RESIZED: 'disk-resized',
  /** Another file is behind a disk's path (another inode, or the same inode number born again). */
  DISK_REPLACED: 'disk-replaced',
  /** A disk image was written while the agent was stopped (its modification time moved after a clean stop). */
  DISK_MODIFIED: 'disk-modified',
  /** The VM's disks are not those the data dir was made for (added, removed, renamed or reordered). */
  DISK_LAYOUT_CHANGED: 'disk-layout-changed',
  /** A crash interrupted a new generation begun at run time before it could record its own cause. */
  SWITCH_INTERRUPTED: 'switch-interrupted',
} as const;

export type GenerationCause = (typeof GenerationCause)[keyof typeof GenerationCause];

/** Why a generation began: the stable cause and what exactly was found. */
export interface GenerationReason {
  readonly cause: GenerationCause;
  readonly message: string;
}

/** One generation as the data dir remembers it. */
export interface GenerationRecord extends GenerationReason {
  readonly id: string;
  /** ISO time the agent began it. */
  readonly startedAt: string;
}

/** Generations remembered in `agent-state.json`, the current one included: enough to see a pattern. */
export const GENERATION_HISTORY = 8;

/** `history` with `record` first, cut to {@link GENERATION_HISTORY}. */
export function withRecord(
  history: readonly GenerationRecord[] | undefined,
  record: GenerationRecord,
): GenerationRecord[] {
  return [record, ...(history ?? [])].slice(0, GENERATION_HISTORY);
}
