import {
  ErrorCode,
  KeyedSerialQueue,
  SrError,
  type DiskInfo,
  type Logger,
  type Policy,
  type SourceMode,
  type VmInfo,
} from '@site-recovery/shared';
import type { StreamLog, StreamLogStats, StreamStore } from '../log/stream-log.js';

/** A VM's policy as the processor sent it, every field relayed (app-consistent and multi-VM frequencies). */
export type AgentPolicy = Omit<Policy, 't' | 'vm'>;

/** What the hub needs of an agent connection. */
export interface AgentPeer {
  /** The generation the agent's hello named: relayed sums must be of it. */
  readonly generation: string;
  /** A newer connection of the same VM took over. */
  replaced(): void;
  /** The processor set the VM's policy; relay it to the agent. */
  policy(p: AgentPolicy): void;
  /**
   * Sends a `sums` or `sums-end` frame as received from the processor. Returns a promise while the
   * connection's send buffer is over its limit, which resolves once it has drained (or closed).
   */
  sums(frame: Buffer): Promise<void> | undefined;
}

/** What the hub needs of a processor subscription. */
export interface SubscriberPeer {
  /**
   * The VM's log appeared or was replaced by a new generation: stream from it. `undefined` while
   * the VM's generation is being switched (the old log is about to close): stop reading.
   */
  attach(log: StreamLog | undefined): void;
  /** Relays the agent's `sums-request` (encoded) if the subscription streams `generation`; whether it did. */
  sumsRequest(frame: Buffer, generation: string): boolean;
}

/** What the hub needs of a processor connection. */
export interface ProcessorPeer {
  /** The set of VMs or a VM's generation changed. */
  vmsChanged(): void;
}

/** One VM's row of `GET /status`: its log's figures and who is connected. */
export interface VmStatus extends Omit<StreamLogStats, 'failed' | 'failedCode'> {
  readonly agentConnected: boolean;
  readonly processorSubscribed: boolean;
  readonly failed?: string;
  /** The stable code of `failed` (SR_NO_SPACE, SR_IO). */
  readonly failedCode?: string;
  /** The replication group its agent last named. */
  readonly group?: string;
  /** The agent's mode when it named one (`watch`). */
  readonly mode?: SourceMode;
}

interface VmChannel {
  log: StreamLog | undefined;
  agent: AgentPeer | undefined;
  readonly subscribers: Set<SubscriberPeer>;
  /** Latest policy from a processor (in memory: the processor sends it again on every subscribe). */
  policy: AgentPolicy | undefined;
  /** Generation switches queued or running: the channel they will fill must not be pruned meanwhile. */
  switches: number;
  /**
   * The agent's latest `sums-request` (re-encoded: a few dozen bytes, one per VM), kept until a
   * `sums-end` of its generation passes or the generation changes, so a processor that subscribes
   * later (or again, after a restart) is asked too.
   */
  sumsRequest: { readonly generation: string; readonly frame: Buffer } | undefined;
}

/**
 * Who is connected to which VM's stream: at most one agent per VM, any number of processor
 * subscriptions, and the VM's current log. Switching generations goes through here so that every
 * subscription follows and every processor hears of it.
 *
 * VM names come from peers, so the hub holds a channel only for a VM with a log, an agent, a
 * subscription or a switch under way, prunes it when the last of those goes, and refuses a VM past
 * `maxVms` (SR_LIMIT) before anything is stored for it.
 */
export class StreamHub {
  private readonly channels = new Map<string, VmChannel>();
  private readonly processors = new Set<ProcessorPeer>();
  /** One generation switch at a time per VM, so subscriptions never read a log being closed. */
  private readonly switching = new KeyedSerialQueue<string>();

  constructor(
    readonly store: StreamStore,
    private readonly log: Logger,
    /** Most VMs tracked at once (CacheStoreLimits.maxVms); VMs already stored are always taken. */
    readonly maxVms: number,
  ) {
    for (const l of store.logs()) this.create(l.vm).log = l;
    if (this.channels.size > maxVms)
      log.warn({ vms: this.channels.size, maxVms }, 'the store holds more VMs than maxVms; new VMs are refused');
  }

  /** VMs the hub holds state for: stored logs plus VMs that only have a connection waiting. */
  get trackedVms(): number {
    return this.channels.size;
  }

  private create(vm: string): VmChannel {
    const c: VmChannel = {
      log: undefined,
      agent: undefined,
      subscribers: new Set(),
      policy: undefined,
      switches: 0,
      sumsRequest: undefined,
    };
    this.channels.set(vm, c);
    return c;
  }

  /** The VM's channel; a new one only while under `maxVms`, else SR_LIMIT and nothing changes. */
  private admit(vm: string): VmChannel {
    const c = this.channels.get(vm);
    if (c !== undefined) return c;
    if (this.channels.size >= this.maxVms) {
      throw new SrError(
        ErrorCode.LIMIT,
        `VM "${vm}" refused: this cache-store already tracks ${this.channels.size} VMs, its maxVms; ` +
          'raise --max-vms or serve the VM from another cache-store',
      );
    }
    return this.create(vm);
  }

  /** Forgets a VM that nothing holds any more. */
  private prune(vm: string, c: VmChannel): void {
    if (c.log !== undefined || c.agent !== undefined || c.subscribers.size > 0 || c.switches > 0) return;
    if (this.channels.get(vm) === c) this.channels.delete(vm);
  }

  /**
   * Records a VM's policy and relays it to its agent, if one is connected. A VM the hub does not
   * track has nobody to relay it to: the processor sends it again after its next subscribe.
   */
  setPolicy(vm: string, policy: AgentPolicy): void {
    const c = this.channels.get(vm);
    if (c === undefined) {
      this.log.debug({ vm }, 'policy for a VM not tracked; ignored');
      return;
    }
    c.policy = policy;
    c.agent?.policy(policy);
  }

  /**
   * Records the replication group the VM's agent named in its hello, durably with the VM's log, and
   * tells the processors when it changed: they send the group's policy to every member.
   */
  async setGroup(vm: string, log: StreamLog, group: string | undefined): Promise<void> {
    if (log.group === group) return;
    await log.setGroup(group);
    this.log.info({ vm, group: group ?? null }, 'replication group changed');
    for (const p of this.processors) p.vmsChanged();
  }

  /** Records the mode the VM's agent named in its hello, as {@link setGroup} does the group. */
  async setMode(vm: string, log: StreamLog, mode: SourceMode | undefined): Promise<void> {
    if (log.mode === mode) return;
    await log.setMode(mode);
    this.log.info({ vm, mode: mode ?? 'nbd' }, "agent's mode changed");
    for (const p of this.processors) p.vmsChanged();
  }

  /**
   * Makes `agent` the VM's writer; the previous one, if any, is told it was replaced. A new VM
   * past `maxVms` is refused with SR_LIMIT.
   */
  attachAgent(vm: string, agent: AgentPeer): void {
    const c = this.admit(vm);
    const old = c.agent;
    c.agent = agent;
    if (c.policy !== undefined) agent.policy(c.policy);
    if (old !== undefined && old !== agent) {
      this.log.info({ vm }, 'a newer agent connection replaces the current one');
      old.replaced();
    }
  }

  /** Whether `agent` is (still) the VM's writer. */
  isAgent(vm: string, agent: AgentPeer): boolean {
    return this.channels.get(vm)?.agent === agent;
  }

  detachAgent(vm: string, agent: AgentPeer): void {
    const c = this.channels.get(vm);
    if (c?.agent !== agent) return;
    c.agent = undefined;
    this.prune(vm, c);
  }

  /** The VM's log for `generation`, replacing an older generation (see StreamStore.openGeneration). */
  async openGeneration(vm: string, generation: string, disks: readonly DiskInfo[]): Promise<StreamLog> {
    const c = this.admit(vm);
    c.switches++;
    try {
      return await this.switching.run(vm, () => this.switchTo(c, vm, generation, disks));
    } finally {
      c.switches--;
      this.prune(vm, c);
    }
  }

  private async switchTo(c: VmChannel, vm: string, generation: string, disks: readonly DiskInfo[]): Promise<StreamLog> {
    if (c.log !== undefined && c.log.generation === generation) return c.log;
    if (c.sumsRequest?.generation !== generation) c.sumsRequest = undefined;
    if (c.log !== undefined) {
      c.log = undefined;
      for (const s of c.subscribers) s.attach(undefined);
    }
    try {
      c.log = await this.store.openGeneration(vm, generation, disks);
      return c.log;
    } finally {
      c.log ??= this.store.get(vm); // a failed switch leaves whatever the store still holds
      // Processors hear of the new generation before its stream starts.
      for (const p of this.processors) p.vmsChanged();
      for (const s of c.subscribers) s.attach(c.log);
    }
  }

  logOf(vm: string): StreamLog | undefined {
    return this.channels.get(vm)?.log;
  }

  /**
   * Adds a subscription; it is attached at once when the VM has a log, else when one appears. A new
   * VM past `maxVms` is refused with SR_LIMIT.
   */
  subscribe(vm: string, s: SubscriberPeer): void {
    const c = this.admit(vm);
    c.subscribers.add(s);
    if (c.log !== undefined) s.attach(c.log);
    if (c.sumsRequest !== undefined && s.sumsRequest(c.sumsRequest.frame, c.sumsRequest.generation))
      this.log.info({ vm, generation: c.sumsRequest.generation }, 'kept sums request relayed to a new subscription');
  }

  /**
   * The VM's agent asks for the replica's block sums (checksum resync; the session checked that
   * `generation` is its own). Kept as the VM's latest request and relayed to the newest subscription
   * that streams that generation: one answer, never two interleaved from two processors.
   */
  requestSums(vm: string, generation: string, frame: Buffer): void {
    const c = this.channels.get(vm);
    if (c === undefined) return;
    c.sumsRequest = { generation, frame };
    const newest = [...c.subscribers].reverse().find((s) => s.sumsRequest(frame, generation));
    this.log.info(
      { vm, generation },
      newest !== undefined ? 'sums request relayed' : 'sums request kept until a processor subscribes',
    );
  }

  /**
   * A processor's `sums` / `sums-end` frame for the VM's agent, relayed only to an agent of that
   * generation (dropped otherwise: an agent of another generation asks afresh). A promise while the
   * agent's send buffer is full; a `sums-end` ends the kept request.
   */
  relaySums(vm: string, generation: string, frame: Buffer, end: boolean): Promise<void> | undefined {
    const c = this.channels.get(vm);
    if (c === undefined) return undefined;
    if (end && c.sumsRequest?.generation === generation) c.sumsRequest = undefined;
    const agent = c.agent;
    if (agent === undefined || agent.generation !== generation) {
      this.log.debug({ vm, generation }, 'sums for an agent not connected with that generation; dropped');
      return undefined;
    }
    return agent.sums(frame);
  }

  unsubscribe(vm: string, s: SubscriberPeer): void {
    const c = this.channels.get(vm);
    if (c === undefined || !c.subscribers.delete(s)) return;
    this.prune(vm, c);
  }

  addProcessor(p: ProcessorPeer): void {
    this.processors.add(p);
  }

  removeProcessor(p: ProcessorPeer): void {
    this.processors.delete(p);
  }

  /** The `vms` list sent to processors: VMs with a stream, in name order. */
  vms(): VmInfo[] {
    return this.logs().map((l) => ({
      vm: l.vm,
      generation: l.generation,
      disks: [...l.disks],
      firstLsn: l.firstLsn,
      lastLsn: l.durableLsn,
      ...(l.group !== undefined ? { group: l.group } : {}),
      ...(l.mode !== undefined ? { mode: l.mode } : {}),
    }));
  }

  status(): VmStatus[] {
    return this.logs().map((l) => {
      const s = l.stats();
      const c = this.channels.get(l.vm)!;
      return {
        vm: s.vm,
        generation: s.generation,
        disks: s.disks,
        firstLsn: s.firstLsn,
        durableLsn: s.durableLsn,
        appliedLsn: s.appliedLsn,
        segments: s.segments,
        bytes: s.bytes,
        agentConnected: c.agent !== undefined,
        processorSubscribed: c.subscribers.size > 0,
        ...(l.group !== undefined ? { group: l.group } : {}),
        ...(l.mode !== undefined ? { mode: l.mode } : {}),
        ...(s.failed !== undefined ? { failed: s.failed, failedCode: s.failedCode ?? ErrorCode.IO } : {}),
      };
    });
  }

  private logs(): StreamLog[] {
    const out: StreamLog[] = [];
    for (const c of this.channels.values()) if (c.log !== undefined) out.push(c.log);
    return out.sort((a, b) => (a.vm < b.vm ? -1 : a.vm > b.vm ? 1 : 0));
  }
}
