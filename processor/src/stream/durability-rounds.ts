import type { Logger, SerialQueue, SrError } from '@site-recovery/shared';
import type { Replica } from '../replica/replica-store.js';
import { sameSync, type InitialSyncTracker } from './initial-copy-tracker.js';
import type { RecordApplier } from './record-applier.js';
import { asStorageError } from './storage-error.js';

/** What a VM's durability rounds work on. */
export interface DurableVm {
  readonly vm: string;
  readonly log: Logger;
  readonly sync: InitialSyncTracker;
  replica(): Replica | undefined;
  applier(): RecordApplier | undefined;
  /** Tells the cache-store that records up to `lsn` are durable; false when there is no stream to tell. */
  confirm(generation: string, lsn: number): boolean;
  /** The replica's storage failed: applying pauses at the durable position. */
  pause(err: SrError): void;
}

/**
 * A VM's durability rounds (DESIGN.md invariant 2): fsync the replica disks, persist the applied
 * position, and only then confirm it to the cache-store. Rounds run under the VM's exclusive queue
 * (with generation changes and close); overlapping `flush` calls share rounds.
 */
export class DurabilityRounds {
  /** Applied, fsynced and persisted. */
  durableLsn = 0;
  /** Sent to the cache-store on the current stream. */
  confirmedLsn = 0;
  bytesSinceFlush = 0;
  /**
   * Set when storage failed: what was applied after the durable position cannot be trusted, and
   * nothing more is persisted or confirmed until the stream has been sent again from there.
   */
  rewindToDurable = false;
  private flushing: Promise<void> | undefined;
  private flushAgain = false;

  constructor(
    private readonly v: DurableVm,
    private readonly exclusive: SerialQueue,
  ) {}

  /** Starts over at a persisted position (a replica attached, a new generation). */
  reset(durable: number): void {
    this.durableLsn = durable;
    this.confirmedLsn = 0;
    this.bytesSinceFlush = 0;
    this.rewindToDurable = false;
  }

  /** Rounds until no more were asked for meanwhile. Never rejects: a storage failure pauses the VM. */
  flush(): Promise<void> {
    if (this.flushing !== undefined) {
      this.flushAgain = true;
      return this.flushing;
    }
    const run = async (): Promise<void> => {
      do {
        this.flushAgain = false;
        await this.exclusive.run(() => this.once());
      } while (this.flushAgain);
    };
    this.flushing = run()
      .catch((err: unknown) => this.v.log.error({ vm: this.v.vm, err: (err as Error).message }, 'flush failed'))
      .finally(() => (this.flushing = undefined));
    return this.flushing;
  }

  /** One round; the caller holds the exclusive queue. */
  async once(): Promise<void> {
    const replica = this.v.replica();
    const applier = this.v.applier();
    if (replica === undefined || applier === undefined) return;
    // After a failed fsync a later one proves nothing about the pages it lost (their dirty state is
    // gone): nothing more is persisted or confirmed until the stream has been sent again.
    if (this.rewindToDurable) return;
    if (applier.failed !== undefined) {
      // A write that failed after its batch was handed over, with no later batch to trip on it.
      this.v.pause(asStorageError(applier.failed, `replica of ${this.v.vm} could not be written`));
      return;
    }
    const lsn = applier.applied;
    const sync = this.v.sync.at(lsn);
    const persisted = replica.info();
    if (lsn < this.durableLsn) return;
    if (lsn > persisted.appliedLsn || !sameSync(sync, persisted.initialSync)) {
      this.bytesSinceFlush = 0;
      try {
        await replica.flush();
        await replica.savePosition({ appliedLsn: lsn, initialSync: sync });
      } catch (err) {
        this.v.pause(asStorageError(err, `replica of ${this.v.vm} could not be made durable`));
        return;
      }
      this.v.sync.settle(lsn);
      this.durableLsn = lsn;
    }
    if (this.durableLsn > this.confirmedLsn && this.v.confirm(persisted.generation, this.durableLsn))
      this.confirmedLsn = this.durableLsn;
  }
}
