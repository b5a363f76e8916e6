import type { VmInfo } from '@site-recovery/shared';

/** What the cache-store holds of a VM's stream: a range of LSNs of one generation. */
export interface HeldRange {
  readonly generation: string;
  readonly firstLsn: number;
  readonly lastLsn: number;
}

/** What the cache-store holds of one VM, as its VM list and the batches it sends say. */
export class CacheStorePosition {
  private range: { generation: string; firstLsn: number; lastLsn: number } | undefined;

  /** The last range heard of, for status; `undefined` before the cache-store has said anything. */
  get held(): HeldRange | undefined {
    return this.range;
  }

  /** The cache-store's VM list says what it holds. */
  note(info: VmInfo): void {
    this.range = { generation: info.generation, firstLsn: info.firstLsn, lastLsn: info.lastLsn };
  }

  /** A batch of `generation` from `firstLsn` to `lastLsn` arrived: the cache-store holds at least that. */
  noteBatch(generation: string, firstLsn: number, lastLsn: number): void {
    if (this.range === undefined || this.range.generation !== generation)
      this.range = { generation, firstLsn, lastLsn };
    else this.range.lastLsn = Math.max(this.range.lastLsn, lastLsn);
  }

  /** The newest LSN the cache-store holds of `generation`; `undefined` when it is at another one. */
  lastLsnOf(generation: string | undefined): number | undefined {
    const r = this.range;
    return r !== undefined && r.generation === generation ? r.lastLsn : undefined;
  }
}
