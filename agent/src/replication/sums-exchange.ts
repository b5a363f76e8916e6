import {
  BLOCK_SUM_ALGO,
  ErrorCode,
  SrError,
  type Logger,
  type Sums,
  type SumsEnd,
  type SumsRequest,
} from '@site-recovery/shared';
import { ReplicaSums } from './replica-sums.js';

/** How the initial copy of a new generation asks for the replica's block sums (checksum resync). */
export interface SumsOptions {
  /**
   * Bytes per compared block: a power of two from 4 KiB to 1 MiB that divides the copy chunk. Default
   * 4 KiB, the page and filesystem block size, so one changed filesystem block costs one block of data.
   * The sums cost 16 bytes per block on the wire (1/256 of the disk: 16 MiB for 4 GiB), about what the
   * data of 0.4% of the blocks costs; larger blocks cut that, but a change scattered over 4 KiB blocks
   * then drags whole large blocks along (at 64 KiB, 1% of 4 KiB blocks changed at random touch 15% of
   * the blocks, so 15 times the data of a 4 KiB comparison).
   */
  readonly blockBytes: number;
  /**
   * Longest silence while waiting for the answer: from the request (and each time it is sent again
   * after a reconnection) or the answer's last message. Past it the copy sends every block instead,
   * logged as a warning and shown in the status (`fullCopyReason`). Default 10 minutes: a processor
   * that is up answers within seconds (its first sums come after one block is hashed); one that is
   * down would receive the copy only once it is back, so waiting costs nothing but a later start.
   */
  readonly waitMs: number;
  /**
   * Answers that cannot be used (a gap, a disk past the layout, sums of another block size) are
   * asked for again, this many requests in all; then the copy sends every block. Default 3.
   */
  readonly attempts: number;
}

export const DEFAULT_SUMS_OPTIONS: SumsOptions = { blockBytes: 4096, waitMs: 10 * 60_000, attempts: 3 };

/** The replica's sums, or why every block is sent instead (`warn`: something went wrong, not just no replica). */
export type SumsOutcome = { readonly sums: ReplicaSums } | { readonly fullCopyReason: string; readonly warn: boolean };

/** The exchange as the status shows it, while it waits for the answer. */
export interface SumsStatus {
  readonly blockBytes: number;
  /** When the request now answered was made. */
  readonly requestedAt: string;
  /** Requests made so far (see SumsOptions.attempts). */
  readonly attempt: number;
  readonly receivedBlocks: number;
  readonly totalBlocks: number;
}

interface SumsExchangeOptions {
  readonly vm: string;
  readonly generation: string;
  readonly disks: readonly { readonly size: number }[];
  /** Where the answer is kept while the copy uses it (scratch; see ReplicaSums). */
  readonly file: string;
  readonly options: SumsOptions;
  /** Sets the request the shipper sends now and after every welcome; `undefined` stops that. */
  readonly send: (request: SumsRequest | undefined) => void;
  readonly log: Logger;
}

type Ending = SumsEnd | 'timeout' | 'stopped';

/**
 * Asks the processor (through the cache-store) for the sums of its replica's blocks and waits for the
 * whole answer, while the VM's writes go on being journaled and shipped.
 */
export class SumsExchange {
  private store: ReplicaSums | undefined;
  private ending: ((e: Ending) => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private requestedAt = 0;
  private attempt = 0;
  private stopped = false;

  /** Refuses options the wire would refuse (SR_BAD_OPTION), before anything is asked. */
  constructor(private readonly o: SumsExchangeOptions) {
    const { blockBytes, waitMs, attempts } = o.options;
    const bad = (what: string): SrError => new SrError(ErrorCode.BAD_OPTION, `replication.sums: ${what}`);
    if (
      !Number.isSafeInteger(blockBytes) ||
      blockBytes < 4096 ||
      blockBytes > 1 << 20 ||
      (blockBytes & (blockBytes - 1)) !== 0
    )
      throw bad(`blockBytes ${blockBytes} is not a power of two from 4096 to 1048576`);
    if (!(waitMs >= 0)) throw bad(`waitMs ${waitMs} is not a duration`);
    if (!Number.isSafeInteger(attempts) || attempts < 1) throw bad(`attempts ${attempts} is not a count of at least 1`);
  }

  get blockBytes(): number {
    return this.o.options.blockBytes;
  }

  /** Resolves to the sums (the caller closes them) or to why not; `undefined` once stopped. */
  async obtain(): Promise<SumsOutcome | undefined> {
    const { blockBytes, attempts, waitMs } = this.o.options;
    const request: SumsRequest = {
      t: 'sums-request',
      vm: this.o.vm,
      generation: this.o.generation,
      blockBytes,
      algo: BLOCK_SUM_ALGO,
    };
    const store = await ReplicaSums.open(this.o.file, this.o.disks, blockBytes);
    this.store = store;
    let kept = false;
    try {
      let last = '';
      for (this.attempt = 1; this.attempt <= attempts; this.attempt++) {
        await store.flushed(); // nothing of an earlier answer lands over this one
        store.reset();
        this.requestedAt = Date.now();
        const end = await new Promise<Ending>((resolve) => {
          if (this.stopped) return resolve('stopped');
          this.ending = resolve;
          this.rearm();
          this.o.send(request);
        });
        this.ending = undefined;
        clearTimeout(this.timer);
        if (end === 'stopped') return undefined;
        if (end === 'timeout')
          return { fullCopyReason: `no answer to the sums request within ${waitMs} ms of silence`, warn: true };
        if (!end.available)
          return { fullCopyReason: `the replica cannot be compared: ${end.reason ?? 'no reason given'}`, warn: false };
        await store.flushed();
        if (store.complete) {
          kept = true;
          return { sums: store };
        }
        last = store.problem ?? `the answer ended after ${store.receivedBlocks} of ${store.totalBlocks} blocks`;
        this.o.log.warn({ attempt: this.attempt, attempts, problem: last }, 'the sums answer cannot be used');
      }
      return { fullCopyReason: `${attempts} sums answers could not be used, the last: ${last}`, warn: true };
    } finally {
      this.o.send(undefined);
      this.store = undefined;
      if (!kept) await store.close(true);
    }
  }

  /** A `sums` or `sums-end` of this generation; a promise while the answer waits to be written. */
  onMessage(m: Sums | SumsEnd): Promise<void> | undefined {
    const store = this.store;
    if (this.ending === undefined || store === undefined) return undefined; // no request waits: a late answer
    this.rearm();
    if (m.t === 'sums') return store.take(m);
    this.ending(m);
    return undefined;
  }

  /** The shipper sent the request (again, after a reconnection): the wait starts over. */
  requestSent(): void {
    if (this.ending !== undefined) this.rearm();
  }

  stop(): void {
    this.stopped = true;
    this.ending?.('stopped');
  }

  /** From the first request until the answer is settled. */
  status(): SumsStatus | undefined {
    const store = this.store;
    if (store === undefined || this.requestedAt === 0) return undefined;
    return {
      blockBytes: store.blockBytes,
      requestedAt: new Date(this.requestedAt).toISOString(),
      attempt: this.attempt,
      receivedBlocks: store.receivedBlocks,
      totalBlocks: store.totalBlocks,
    };
  }

  private rearm(): void {
    clearTimeout(this.timer);
    // setTimeout takes at most 2^31 - 1 ms (about 24.8 days); a longer wait would fire at once.
    this.timer = setTimeout(() => this.ending?.('timeout'), Math.min(this.o.options.waitMs, 2 ** 31 - 1));
    this.timer.unref();
  }
}
