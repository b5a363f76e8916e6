import {
  ErrorCode,
  MessageSchema,
  SrError,
  decodeMessage,
  encodeMessage,
  type Applied,
  type Subscribe,
  type Sums,
  type SumsEnd,
} from '@site-recovery/shared';
import { FlowSender } from './flow-sender.js';
import type { PeerConnection, RoleSession } from './peer-connection.js';
import type { CacheStoreLimits } from './server-options.js';
import type { ProcessorPeer, StreamHub } from './stream-hub.js';
import { Subscription } from './subscription.js';

/**
 * A processor pulling streams: told the VMs held (and again on every change), it subscribes to VMs
 * and confirms what it has applied, which lets the store drop those records.
 */
export class ProcessorSession implements RoleSession, ProcessorPeer {
  private readonly sender: FlowSender;
  private readonly subscriptions = new Map<string, Subscription>();
  /** Kept sums requests already relayed on this connection: a re-subscription does not ask again. */
  private readonly sumsRequestsSent = new WeakSet<Buffer>();

  constructor(
    private readonly conn: PeerConnection,
    private readonly hub: StreamHub,
    limits: CacheStoreLimits,
  ) {
    this.sender = new FlowSender(conn.ws, limits.maxBufferedBytes);
  }

  start(): Promise<void> {
    this.hub.addProcessor(this);
    this.vmsChanged();
    return Promise.resolve();
  }

  vmsChanged(): void {
    this.sender.send(encodeMessage({ t: 'vms', vms: this.hub.vms() }));
  }

  onMessage(frame: Buffer): void | Promise<void> {
    const m = decodeMessage(frame, MessageSchema);
    switch (m.t) {
      case 'subscribe':
        return this.subscribe(m);
      case 'applied':
        return this.applied(m);
      case 'sums':
      case 'sums-end':
        return this.relaySums(m, frame);
      case 'policy':
        return this.hub.setPolicy(m.vm, {
          appConsistentFrequencyMs: m.appConsistentFrequencyMs,
          ...(m.multiVmFrequencyMs !== undefined ? { multiVmFrequencyMs: m.multiVmFrequencyMs } : {}),
        });
      default:
        throw new SrError(ErrorCode.PROTOCOL, `a processor does not send "${m.t}" messages`);
    }
  }

  /** A second subscription to the same VM replaces the first (the processor restarted its cursor). */
  private subscribe(m: Subscribe): void {
    const old = this.subscriptions.get(m.vm);
    if (old !== undefined) {
      old.stop();
      this.hub.unsubscribe(m.vm, old);
    }
    const sub = new Subscription(
      m.vm,
      { generation: m.generation, from: m.from },
      this.sender,
      (err) => this.conn.fail(err),
      this.conn.log,
      (f) => this.firstSend(f),
    );
    // In the map first: a subscription that fails as it attaches is cleaned up by closed().
    this.subscriptions.set(m.vm, sub);
    try {
      this.hub.subscribe(m.vm, sub);
    } catch (err) {
      this.subscriptions.delete(m.vm); // refused (SR_LIMIT) before the hub took it
      throw err;
    }
    if (!sub.streaming) this.conn.log.info({ vm: m.vm }, 'subscription waits for the VM to appear');
  }

  private firstSend(request: Buffer): boolean {
    if (this.sumsRequestsSent.has(request)) return false;
    this.sumsRequestsSent.add(request);
    return true;
  }

  /**
   * Relays the replica's sums to the VM's agent, frame as received (the agent checks it against its
   * own schema). While that agent's send buffer is over `maxBufferedBytes` this connection is not
   * read: TCP pushes back on the processor, and the cache-store holds at most that much per agent.
   */
  private async relaySums(m: Sums | SumsEnd, frame: Buffer): Promise<void> {
    if (!this.subscriptions.has(m.vm)) {
      this.conn.log.debug({ vm: m.vm }, 'sums for a VM this processor did not subscribe; dropped');
      return;
    }
    const full = this.hub.relaySums(m.vm, m.generation, frame, m.t === 'sums-end');
    if (full === undefined) return;
    this.conn.ws.pause();
    try {
      await full;
    } finally {
      if (!this.conn.closed) this.conn.ws.resume();
    }
  }

  private applied(m: Applied): void {
    const log = this.hub.logOf(m.vm);
    if (log === undefined || log.generation !== m.generation) {
      this.conn.log.debug({ vm: m.vm, generation: m.generation }, 'applied for a generation not held; ignored');
      return;
    }
    if (m.lsn > log.durableLsn) {
      throw new SrError(
        ErrorCode.SEQUENCE,
        `${m.vm}: applied up to LSN ${m.lsn}, but only ${log.durableLsn} was ever durable here`,
      );
    }
    // Deleting is housekeeping: a failure is logged, and the next higher applied LSN tries again.
    log
      .release(m.lsn)
      .catch((err: unknown) =>
        this.conn.log.warn({ vm: m.vm, err: (err as Error).message }, 'releasing applied records failed'),
      );
  }

  closed(): void {
    this.sender.close();
    this.hub.removeProcessor(this);
    for (const [vm, sub] of this.subscriptions) {
      sub.stop();
      this.hub.unsubscribe(vm, sub);
    }
    this.subscriptions.clear();
  }
}
