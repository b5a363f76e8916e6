import { ErrorCode, SrError, encodeMessage, isSrError, type Logger, type Stream } from '@site-recovery/shared';
import type { FlowSender } from './flow-sender.js';
import type { SubscriberPeer } from './stream-hub.js';
import type { StoredFrame, StreamLog } from '../log/stream-log.js';

/** What the processor asked for: its generation (null: none yet) and the first LSN it needs. */
export interface SubscribeRequest {
  readonly generation: string | null;
  readonly from: number;
}

/**
 * One processor's subscription to one VM. It sends `stream`, then the durable frames from the
 * requested LSN, read back from the log (the "pump") while it is behind; once caught up it goes
 * live and forwards frames as the log makes them durable, without reading them back. Whenever the
 * connection's send buffer is over its limit the subscription falls back to the pump, which waits
 * for the buffer to drain, so a slow processor costs disk reads, never unbounded memory.
 */
export class Subscription implements SubscriberPeer {
  private log: StreamLog | undefined;
  private next = 0;
  private live = false;
  /** Counts attaches; a pump or watcher of an earlier one ends on its own. */
  private epoch = 0;
  /** The epoch whose pump is running, if any. */
  private pumping: number | undefined;
  private unwatch: (() => void) | undefined;
  private stopped = false;

  constructor(
    readonly vm: string,
    private readonly request: SubscribeRequest,
    private readonly sender: FlowSender,
    private readonly fail: (err: unknown) => void,
    private readonly logger: Logger,
    /** Whether a kept `sums-request` frame has not yet gone out on this connection (then it counts it as sent). */
    private readonly firstSend: (frame: Buffer) => boolean = () => true,
  ) {}

  get streaming(): boolean {
    return this.log !== undefined;
  }

  attach(log: StreamLog | undefined): void {
    if (this.stopped || log === this.log) return;
    this.unwatch?.();
    this.unwatch = undefined;
    this.log = log;
    this.live = false;
    const epoch = ++this.epoch;
    if (log === undefined) return;
    // A processor of another generation (or none) rebuilds its replica from the generation's start.
    const from = this.request.generation === log.generation ? this.request.from : 1;
    if (from < log.firstLsn) {
      this.fail(
        new SrError(
          ErrorCode.SEQUENCE,
          `${this.vm}: records from LSN ${from} of generation ${log.generation} are no longer held (first held: ${log.firstLsn}, applied: ${log.appliedLsn})` +
            (from === 1 && this.request.generation !== log.generation ? '; the agent must start a new generation' : ''),
        ),
      );
      return;
    }
    if (from > log.durableLsn + 1) {
      this.fail(
        new SrError(
          ErrorCode.SEQUENCE,
          `${this.vm}: from ${from} is past the last durable LSN ${log.durableLsn} of generation ${log.generation}`,
        ),
      );
      return;
    }
    this.next = from;
    const stream: Stream = { t: 'stream', vm: this.vm, generation: log.generation, disks: [...log.disks], from };
    this.sender.send(encodeMessage(stream));
    this.unwatch = log.watch({ durable: (frames) => this.onDurable(epoch, log, frames), failed: () => undefined });
    this.startPump(epoch, log);
  }

  sumsRequest(frame: Buffer, generation: string): boolean {
    if (this.stopped || this.log?.generation !== generation) return false;
    // After this subscription's `stream` of that generation (same sender), so the processor knows it.
    if (this.firstSend(frame)) this.sender.send(frame);
    return true;
  }

  stop(): void {
    this.stopped = true;
    this.epoch++;
    this.unwatch?.();
    this.unwatch = undefined;
    this.log = undefined;
  }

  private onDurable(epoch: number, log: StreamLog, frames: readonly StoredFrame[]): void {
    if (!this.live || epoch !== this.epoch) return;
    for (const f of frames) {
      if (f.last < this.next) continue;
      if (f.first !== this.next || !this.sender.hasRoom) {
        this.live = false;
        this.startPump(epoch, log);
        return;
      }
      this.sender.send(f.frame);
      this.next = f.last + 1;
    }
  }

  private startPump(epoch: number, log: StreamLog): void {
    if (this.pumping === epoch) return;
    this.pumping = epoch;
    void this.pump(epoch, log);
  }

  private async pump(epoch: number, log: StreamLog): Promise<void> {
    const current = (): boolean => epoch === this.epoch;
    try {
      while (current()) {
        if (this.next > log.durableLsn) {
          // Caught up; from here on frames arrive through onDurable, in this same turn.
          this.live = true;
          return;
        }
        for await (const f of log.read(this.next)) {
          if (!current()) return;
          if (f.last < this.next) continue;
          await this.sender.ready();
          if (!current()) return;
          this.sender.send(f.frame);
          this.next = f.last + 1;
        }
      }
    } catch (err) {
      // A log closed under the pump is being replaced or shut down: attach() or the close follows.
      if (!current() || isSrError(err, ErrorCode.SHUTTING_DOWN))
        this.logger.debug({ vm: this.vm, err: (err as Error).message }, 'pump ended');
      else this.fail(err);
    } finally {
      if (this.pumping === epoch) this.pumping = undefined;
    }
  }
}
