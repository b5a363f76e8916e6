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

/** Why the copy sends every block (the rest of it, once an answer failed mid-way); `warn`: not just no replica. */
export interface FullCopyReason {
  readonly fullCopyReason: string;
  readonly warn: boolean;
}

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

/**
 * Asks the processor (through the cache-store) for the sums of its replica's blocks, while the VM's writes
 * go on being journaled and shipped, and hands them to the copy as they arrive: the copy compares a chunk
 * as soon as its blocks' sums are here, so the processor's hashing and the agent's overlap. An answer that
 * cannot be used is asked for again (the copy waits meanwhile); one that fails for good, or silence, ends
 * the comparison and the rest of the copy sends every block.
 */
export class SumsExchange {
  private store: ReplicaSums | undefined;
  private phase: 'asking' | 'complete' | 'failed' | 'stopped' = 'asking';
  private failure: FullCopyReason | undefined;
  private timer: NodeJS.Timeout | undefined;
  private requestedAt = 0;
  private attempt = 0;
  private waiters: (() => void)[] = [];
  private readonly request: SumsRequest;

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
    this.request = { t: 'sums-request', vm: o.vm, generation: o.generation, blockBytes, algo: BLOCK_SUM_ALGO };
  }

  get blockBytes(): number {
    return this.o.options.blockBytes;
  }

  /** Why the sums cannot serve (any more): the copy sends every block from here on. */
  get failed(): FullCopyReason | undefined {
    return this.failure;
  }

  /**
   * Asks, and resolves once the first sums arrived (`'sums'`: read them with {@link read}), or with why
   * every block is to be sent; `undefined` once stopped.
   */
  async start(): Promise<'sums' | FullCopyReason | undefined> {
    const store = await ReplicaSums.open(this.o.file, this.o.disks, this.o.options.blockBytes);
    this.store = store;
    await this.ask();
    await this.until(() => this.phase !== 'asking' || store.receivedBlocks > 0);
    if (this.phase === 'stopped') return undefined;
    return this.failure ?? 'sums';
  }

  /**
   * The replica's sums of blocks `first` .. `first + count - 1` of `disk`, once they have arrived;
   * `undefined` when they never will (see {@link failed}) or the exchange stopped.
   */
  async read(disk: number, first: number, count: number): Promise<Buffer | undefined> {
    const store = this.store;
    if (store === undefined) return undefined;
    const here = (): boolean => store.has(disk, first + count);
    await this.until(() => here() || this.phase === 'failed' || this.phase === 'stopped');
    if (!here() || this.phase === 'stopped') return undefined;
    await store.flushed();
    return store.read(disk, first, count);
  }

  /** A `sums` or `sums-end` of this generation; a promise while the answer waits to be written. */
  onMessage(m: Sums | SumsEnd): Promise<void> | undefined {
    const store = this.store;
    if (this.phase !== 'asking' || store === undefined) return undefined; // nothing asked: a late answer
    this.rearm();
    if (m.t === 'sums') {
      const backlog = store.take(m);
      this.wake();
      return backlog;
    }
    if (!m.available) return this.fail(`the replica cannot be compared: ${m.reason ?? 'no reason given'}`, false);
    if (store.complete) {
      this.settle('complete');
      this.o.log.info({ blocks: store.totalBlocks, attempt: this.attempt }, "the replica's sums are all here");
      return undefined;
    }
    const problem = store.problem ?? `the answer ended after ${store.receivedBlocks} of ${store.totalBlocks} blocks`;
    const { attempts } = this.o.options;
    this.o.log.warn({ attempt: this.attempt, attempts, problem }, 'the sums answer cannot be used');
    if (this.attempt >= attempts)
      return this.fail(`${attempts} sums answers could not be used, the last: ${problem}`, true);
    void this.ask();
    return undefined;
  }

  /** The shipper sent the request (again, after a reconnection): the wait starts over. */
  requestSent(): void {
    if (this.phase === 'asking') this.rearm();
  }

  stop(): void {
    if (this.phase === 'asking') this.settle('stopped');
    else this.phase = 'stopped';
    this.wake();
  }

  /** Closes (and with `remove`, deletes) the kept sums. */
  async close(remove: boolean): Promise<void> {
    this.stop();
    await this.store?.close(remove);
  }

  /** While the answer is awaited. */
  status(): SumsStatus | undefined {
    const store = this.store;
    if (store === undefined || this.phase !== 'asking' || this.requestedAt === 0) return undefined;
    return {
      blockBytes: store.blockBytes,
      requestedAt: new Date(this.requestedAt).toISOString(),
      attempt: this.attempt,
      receivedBlocks: store.receivedBlocks,
      totalBlocks: store.totalBlocks,
    };
  }

  private async ask(): Promise<void> {
    const store = this.store!;
    this.attempt++;
    await store.flushed(); // nothing of an earlier answer lands over this one
    if (this.phase !== 'asking') return;
    store.reset();
    this.requestedAt = Date.now();
    this.rearm();
    this.o.send(this.request);
    this.wake();
  }

  private fail(reason: string, warn: boolean): undefined {
    this.failure = { fullCopyReason: reason, warn };
    this.settle('failed');
    return undefined;
  }

  private settle(phase: 'complete' | 'failed' | 'stopped'): void {
    this.phase = phase;
    clearTimeout(this.timer);
    this.o.send(undefined);
    this.wake();
  }

  private rearm(): void {
    clearTimeout(this.timer);
    // setTimeout takes at most 2^31 - 1 ms (about 24.8 days); a longer wait would fire at once.
    const ms = Math.min(this.o.options.waitMs, 2 ** 31 - 1);
    this.timer = setTimeout(
      () => this.phase === 'asking' && this.fail(`no answer to the sums request within ${ms} ms of silence`, true),
      ms,
    );
    this.timer.unref();
  }

  private async until(ready: () => boolean): Promise<void> {
    while (!ready()) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}
