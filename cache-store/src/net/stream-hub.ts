import type { DiskInfo, Logger, VmInfo } from '@site-recovery/shared';
import type { StreamLog, StreamLogStats, StreamStore } from '../log/stream-log.js';

/** What the hub needs of an agent connection. */
export interface AgentPeer {
  /** A newer connection of the same VM took over. */
  replaced(): void;
  /** The processor set the VM's policy; relay it to the agent. */
  policy(appConsistentFrequencyMs: number): void;
}

/** What the hub needs of a processor subscription. */
export interface SubscriberPeer {
  /**
   * The VM's log appeared or was replaced by a new generation: stream from it. `undefined` while
   * the VM's generation is being switched (the old log is about to close): stop reading.
   */
  attach(log: StreamLog | undefined): void;
}

/** What the hub needs of a processor connection. */
export interface ProcessorPeer {
  /** The set of VMs or a VM's generation changed. */
  vmsChanged(): void;
}

/** One VM's row of `GET /status`: its log's figures and who is connected. */
export interface VmStatus extends Omit<StreamLogStats, 'failed'> {
  readonly agentConnected: boolean;
  readonly processorSubscribed: boolean;
  readonly failed?: string;
}

interface VmChannel {
  log: StreamLog | undefined;
  agent: AgentPeer | undefined;
  readonly subscribers: Set<SubscriberPeer>;
}

/**
 * Who is connected to which VM's stream: at most one agent per VM, any number of processor
 * subscriptions, and the VM's current log. Switching generations goes through here so that every
 * subscription follows and every processor hears of it.
 */
export class StreamHub {
  private readonly channels = new Map<string, VmChannel>();
  /** Latest policy per VM from a processor (in memory: the processor sends it again on every subscribe). */
  private readonly policies = new Map<string, number>();
  private readonly processors = new Set<ProcessorPeer>();
  /** One generation switch at a time per VM, so subscriptions never read a log being closed. */
  private readonly switching = new Map<string, Promise<unknown>>();

  constructor(
    readonly store: StreamStore,
    private readonly log: Logger,
  ) {
    for (const l of store.logs()) this.channel(l.vm).log = l;
  }

  private channel(vm: string): VmChannel {
    let c = this.channels.get(vm);
    if (c === undefined) {
      c = { log: undefined, agent: undefined, subscribers: new Set() };
      this.channels.set(vm, c);
    }
    return c;
  }

  /** Records a VM's policy and relays it to its agent, if one is connected. */
  setPolicy(vm: string, appConsistentFrequencyMs: number): void {
    this.policies.set(vm, appConsistentFrequencyMs);
    this.channels.get(vm)?.agent?.policy(appConsistentFrequencyMs);
  }

  /** Makes `agent` the VM's writer; the previous one, if any, is told it was replaced. */
  attachAgent(vm: string, agent: AgentPeer): void {
    const c = this.channel(vm);
    const old = c.agent;
    c.agent = agent;
    const policy = this.policies.get(vm);
    if (policy !== undefined) agent.policy(policy);
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
    if (c?.agent === agent) c.agent = undefined;
  }

  /** The VM's log for `generation`, replacing an older generation (see StreamStore.openGeneration). */
  openGeneration(vm: string, generation: string, disks: readonly DiskInfo[]): Promise<StreamLog> {
    const prev = this.switching.get(vm) ?? Promise.resolve();
    const run = prev.catch(() => undefined).then(() => this.switchTo(vm, generation, disks));
    this.switching.set(vm, run);
    void run
      .catch(() => undefined)
      .then(() => {
        if (this.switching.get(vm) === run) this.switching.delete(vm);
      });
    return run;
  }

  private async switchTo(vm: string, generation: string, disks: readonly DiskInfo[]): Promise<StreamLog> {
    const c = this.channel(vm);
    if (c.log !== undefined && c.log.generation === generation) return c.log;
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

  /** Adds a subscription; it is attached at once when the VM has a log, else when one appears. */
  subscribe(vm: string, s: SubscriberPeer): void {
    const c = this.channel(vm);
    c.subscribers.add(s);
    if (c.log !== undefined) s.attach(c.log);
  }

  unsubscribe(vm: string, s: SubscriberPeer): void {
    this.channels.get(vm)?.subscribers.delete(s);
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
        ...(s.failed !== undefined ? { failed: s.failed } : {}),
      };
    });
  }

  private logs(): StreamLog[] {
    const out: StreamLog[] = [];
    for (const c of this.channels.values()) if (c.log !== undefined) out.push(c.log);
    return out.sort((a, b) => (a.vm < b.vm ? -1 : a.vm > b.vm ? 1 : 0));
  }
}
