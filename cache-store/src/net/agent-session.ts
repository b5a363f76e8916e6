import {
  ErrorCode,
  MessageSchema,
  PROTOCOL_VERSION,
  SrError,
  checkBatchShape,
  decodeMessage,
  encodeMessage,
  lastLsn,
  type AgentHello,
  type Batch,
  type DiskInfo,
  type SumsRequest,
} from '@site-recovery/shared';
import { FlowSender } from './flow-sender.js';
import { CloseCode, type PeerConnection, type RoleSession } from './peer-connection.js';
import type { CacheStoreLimits } from './server-options.js';
import type { AgentPeer, AgentPolicy, StreamHub } from './stream-hub.js';
import type { StreamLog } from '../log/stream-log.js';

/**
 * An agent streaming one VM: welcome with the durable LSN, then batches appended to the VM's log
 * as they arrive and acknowledged (cumulatively) only once the log says they are durable.
 */
export class AgentSession implements RoleSession, AgentPeer {
  private log: StreamLog | undefined;
  private unwatch: (() => void) | undefined;
  private acked = 0;
  private paused = false;
  private ended = false;
  /** The processor's sums on their way to the agent, held to `maxBufferedBytes` (ProcessorSession.relaySums). */
  private readonly sumsSender: FlowSender;

  constructor(
    private readonly conn: PeerConnection,
    private readonly hub: StreamHub,
    private readonly hello: AgentHello,
    private readonly limits: CacheStoreLimits,
  ) {
    this.sumsSender = new FlowSender(conn.ws, limits.maxBufferedBytes);
  }

  get generation(): string {
    return this.hello.generation;
  }

  async start(): Promise<void> {
    const { vm, generation, disks } = this.hello;
    if (disks.length > this.limits.maxDisks)
      throw new SrError(ErrorCode.LIMIT, `${disks.length} disks exceed maxDisks ${this.limits.maxDisks}`);
    this.checkDisks(this.hub.logOf(vm)); // before it takes over from a working connection
    this.hub.attachAgent(vm, this);
    const log = await this.hub.openGeneration(vm, generation, disks);
    if (this.ended) return;
    this.checkDisks(log);
    // Frames a replaced connection left in flight become durable first, so the welcome is exact.
    const durable = await log.resume();
    if (this.ended) return;
    // Kept with the log, so processors learn the group even while the agent is away.
    await this.hub.setGroup(vm, log, this.hello.group);
    if (this.ended) return;
    await this.hub.setMode(vm, log, this.hello.mode);
    if (this.ended) return;
    this.log = log;
    this.acked = durable;
    this.unwatch = log.watch({
      durable: (_frames, lsn) => this.onDurable(lsn),
      failed: (err) => this.conn.fail(err),
    });
    this.conn.send({ t: 'welcome', v: PROTOCOL_VERSION, durableLsn: durable });
    this.welcomed = true;
    if (this.pendingPolicy !== undefined) this.policy(this.pendingPolicy);
  }

  private welcomed = false;
  private pendingPolicy: AgentPolicy | undefined;

  policy(p: AgentPolicy): void {
    // The agent expects its welcome first; a policy that arrives earlier waits for it.
    if (!this.welcomed) {
      this.pendingPolicy = p;
      return;
    }
    this.conn.send({ ...p, t: 'policy', vm: this.hello.vm });
  }

  /** Records name disks by index, so a generation's disk layout is fixed. */
  private checkDisks(log: StreamLog | undefined): void {
    const { vm, generation, disks } = this.hello;
    if (log === undefined || log.generation !== generation || sameDisks(log.disks, disks)) return;
    throw new SrError(
      ErrorCode.STATE_MISMATCH,
      `${vm} generation ${generation} has disks ${describe(log.disks)}, the hello declares ${describe(disks)}; a new disk layout needs a new generation`,
    );
  }

  sums(frame: Buffer): Promise<void> | undefined {
    // Before its welcome the agent takes nothing else; it asks again once welcomed if it still waits.
    if (this.ended || !this.welcomed) return undefined;
    this.sumsSender.send(frame);
    return this.sumsSender.hasRoom ? undefined : this.sumsSender.ready();
  }

  onMessage(frame: Buffer): void {
    if (this.ended || this.log === undefined) return;
    const m = decodeMessage(frame, MessageSchema);
    if (m.t === 'batch') return this.append(m, frame);
    if (m.t === 'sums-request') return this.requestSums(m);
    throw new SrError(ErrorCode.PROTOCOL, `an agent does not send "${m.t}" messages`);
  }

  /** Its own VM and generation only: the answer describes the replica the new generation overwrites. */
  private checkOwn(what: string, m: { vm: string; generation: string }): void {
    if (m.vm !== this.hello.vm)
      throw new SrError(ErrorCode.PROTOCOL, `${what} for VM "${m.vm}" on the stream of "${this.hello.vm}"`);
    if (m.generation !== this.hello.generation) {
      throw new SrError(
        ErrorCode.GENERATION,
        `${what} of generation "${m.generation}" on the stream of generation "${this.hello.generation}"`,
      );
    }
  }

  private requestSums(m: SumsRequest): void {
    this.checkOwn('sums-request', m);
    // Re-encoded from the checked fields: what is kept and relayed is a few dozen bytes, whatever was sent.
    const { vm, generation, blockBytes, algo } = m;
    this.hub.requestSums(vm, generation, encodeMessage({ t: 'sums-request', vm, generation, blockBytes, algo }));
  }

  private append(b: Batch, frame: Buffer): void {
    const log = this.log!;
    this.checkOwn('batch', b);
    checkBatchShape(b, this.limits);
    log.append({ first: b.first, last: lastLsn(b), frame });
    if (!this.paused && log.pendingBytes > this.limits.maxUnsyncedBytes) {
      this.paused = true;
      this.conn.ws.pause();
    }
  }

  private onDurable(lsn: number): void {
    if (this.ended) return;
    if (lsn > this.acked) {
      this.acked = lsn;
      this.conn.send({ t: 'ack', lsn });
    }
    if (this.paused && this.log !== undefined && this.log.pendingBytes <= this.limits.maxUnsyncedBytes / 2) {
      this.paused = false;
      this.conn.ws.resume();
    }
  }

  replaced(): void {
    this.end();
    this.conn.close(CloseCode.REPLACED, 'replaced by a newer connection of this VM');
  }

  closed(): void {
    this.end();
    this.hub.detachAgent(this.hello.vm, this);
  }

  private end(): void {
    this.ended = true;
    this.sumsSender.close();
    this.unwatch?.();
    this.unwatch = undefined;
  }
}

function sameDisks(a: readonly DiskInfo[], b: readonly DiskInfo[]): boolean {
  return a.length === b.length && a.every((d, i) => d.id === b[i]!.id && d.size === b[i]!.size);
}

function describe(disks: readonly DiskInfo[]): string {
  return disks.map((d) => `${d.id}:${d.size}`).join(',');
}
