import {
  ErrorCode,
  MessageSchema,
  SrError,
  decodeMessage,
  encodeMessage,
  type Applied,
  type Subscribe,
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

  onMessage(frame: Buffer): void {
    const m = decodeMessage(frame, MessageSchema);
    switch (m.t) {
      case 'subscribe':
        return this.subscribe(m);
      case 'applied':
        return this.applied(m);
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
