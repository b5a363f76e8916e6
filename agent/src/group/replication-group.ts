import type { Logger } from '@site-recovery/shared';
import type { LsnSequence } from '../backend/capture-filter.js';
import type { Journal } from '../journal/journal.js';
import {
  DEFAULT_HOLD_TIMEOUT_MS,
  DEFAULT_MULTI_VM_FREQUENCY_MS,
  DEFAULT_PEER_LIMITS,
  ROUND_TIMEOUT_FRACTION,
  checkGroupConfig,
  listenAddress,
  type GroupConfig,
} from './group-config.js';
import { GroupCoordinator } from './group-coordinator.js';
import { GroupMember, type Refusal } from './group-member.js';
import type { PeerMessage } from './group-messages.js';
import { GroupStats, type GroupStatus } from './group-stats.js';
import { PeerMesh } from './peer-mesh.js';
import { TermStore } from './term-store.js';
import type { WriteGate } from './write-gate.js';

export interface ReplicationGroupOptions {
  readonly vm: string;
  readonly config: GroupConfig;
  /** The agent's data dir: the highest term seen is kept there. */
  readonly dataDir: string;
  readonly journal: Journal;
  readonly lsns: LsnSequence;
  /** The VM's write gate, shared by all of its disks' capture filters. */
  readonly gate: WriteGate;
  readonly canCut?: () => Refusal | undefined;
  readonly log: Logger;
}

/**
 * This VM's membership of a replication group: its links to the other members, its side of every
 * round, and the rounds it runs while it is the coordinator — the lowest VM name among itself and
 * the members it has an authenticated link to (each link is both ways, so a member it reaches also
 * reaches it).
 */
export class ReplicationGroup {
  private coordinatorVm: string;
  private closing: Promise<void> | undefined;
  private stopping = false;

  private constructor(
    private readonly o: ReplicationGroupOptions,
    private readonly stats: GroupStats,
    private readonly terms: TermStore,
    private readonly member: GroupMember,
    private readonly coordinator: GroupCoordinator,
    private mesh: PeerMesh | undefined,
  ) {
    this.coordinatorVm = o.vm;
  }

  static async start(o: ReplicationGroupOptions): Promise<ReplicationGroup> {
    const c = o.config;
    checkGroupConfig(o.vm, c);
    const limits = { ...DEFAULT_PEER_LIMITS, ...c.limits };
    const holdTimeoutMs = c.holdTimeoutMs ?? DEFAULT_HOLD_TIMEOUT_MS;
    const stats = new GroupStats(limits.holdWindow);
    const terms = await TermStore.open(o.dataDir, o.log);
    const members = c.peers.map((p) => p.vm).sort();
    const member = new GroupMember({
      group: c.name,
      vm: o.vm,
      journal: o.journal,
      lsns: o.lsns,
      gate: o.gate,
      terms,
      holdTimeoutMs,
      stats,
      ...(o.canCut !== undefined ? { canCut: o.canCut } : {}),
      log: o.log,
    });
    const coordinator: GroupCoordinator = new GroupCoordinator({
      group: c.name,
      vm: o.vm,
      members,
      member,
      terms,
      roundTimeoutMs: Math.max(1, Math.floor(holdTimeoutMs * ROUND_TIMEOUT_FRACTION)),
      frequencyMs: c.frequencyMs ?? DEFAULT_MULTI_VM_FREQUENCY_MS,
      stats,
      // Called during rounds only, once `group` and its mesh exist.
      isUp: (vm): boolean => group.mesh?.isUp(vm) ?? false,
      send: (vm, m): boolean => group.mesh?.send(vm, m) ?? false,
      log: o.log,
    });
    const group: ReplicationGroup = new ReplicationGroup(o, stats, terms, member, coordinator, undefined);
    group.mesh = await PeerMesh.start({
      self: o.vm,
      group: c.name,
      secret: c.secret,
      peers: c.peers,
      listen: listenAddress(o.vm, c),
      limits,
      log: o.log,
      terms: () => terms.view(),
      onUp: () => group.elect(),
      onDown: (vm) => {
        member.peerDown(vm);
        coordinator.peerDown(vm);
        group.elect();
      },
      onMessage: (vm, m) => group.onMessage(vm, m),
    });
    group.elect();
    o.log.info({ group: c.name, vm: o.vm, listen: group.listen, members, holdTimeoutMs }, 'group member started');
    return group;
  }

  /** The address the peer listener is bound to, host:port. */
  get listen(): string {
    const a = this.mesh!.address;
    return `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
  }

  /** The processor's policy: the multi-VM frequency, or absent for the default. */
  setFrequency(ms: number | undefined): void {
    this.coordinator.setFrequency(ms ?? this.o.config.frequencyMs ?? DEFAULT_MULTI_VM_FREQUENCY_MS);
  }

  status(): GroupStatus {
    const c = this.o.config;
    const last = this.stats.last;
    const lastFailure = this.stats.lastFailure;
    const holding = this.member.holding;
    return {
      group: c.name,
      vm: this.o.vm,
      coordinator: this.coordinatorVm,
      term: this.terms.highest,
      frequencyMs: this.coordinator.frequencyMs,
      holdTimeoutMs: c.holdTimeoutMs ?? DEFAULT_HOLD_TIMEOUT_MS,
      listen: this.listen,
      peers: this.mesh!.status(),
      rounds: this.stats.counts(),
      ...(holding !== undefined ? { holding: { round: holding, writesHeld: this.o.gate.waiting } } : {}),
      ...(last !== undefined ? { last } : {}),
      ...(lastFailure !== undefined ? { lastFailure } : {}),
      writeHoldMs: this.stats.writeHoldMs(),
      authFailures: this.mesh!.authFailures(),
    };
  }

  /**
   * This VM can take no part in a group point now (`code`, `reason`): the round it runs as coordinator
   * fails for every member, and the round it holds as a member is aborted (journaled, so the processor
   * records the reason).
   */
  abandon(code: string, reason: string): void {
    const a = { code, failedBy: this.o.vm, reason };
    this.coordinator.giveUp(a);
    this.member.abandon(a);
  }

  /** Stops the rounds, releases any held write (journaled as an abort), and closes every link. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.stopping = true;
      await this.coordinator.stop();
      this.member.close();
      await this.mesh?.close();
    })();
    return this.closing;
  }

  private elect(): void {
    if (this.stopping) return;
    const lowest = [this.o.vm, ...this.mesh!.upPeers()].sort()[0]!;
    if (lowest !== this.coordinatorVm)
      this.o.log.info({ group: this.o.config.name, coordinator: lowest }, 'group coordinator changed');
    this.coordinatorVm = lowest;
    this.coordinator.setActive(lowest === this.o.vm);
  }

  private onMessage(vm: string, m: PeerMessage): void {
    switch (m.t) {
      case 'welcome':
      case 'hb':
        this.terms.observe(m.term, m.by);
        return;
      case 'prepare': {
        const refusal = this.member.prepare(vm, m.term, m.mark);
        // READY goes to every member, not only the coordinator: each commits as soon as it has heard all
        // of them (group-member.ts `ready`), a hop before the coordinator's COMMIT would reach it.
        if (refusal === undefined)
          for (const other of m.mark.members)
            if (other !== vm && other !== this.o.vm) this.mesh!.send(other, { t: 'ready', round: m.mark.round });
        this.mesh!.send(
          vm,
          refusal === undefined
            ? { t: 'ready', round: m.mark.round }
            : {
                t: 'refused',
                round: m.mark.round,
                code: refusal.code,
                reason: refusal.reason.slice(0, 1024),
                term: this.terms.highest,
              },
        );
        return;
      }
      case 'ready':
        this.coordinator.onReady(vm, m.round);
        this.member.ready(vm, m.round);
        return;
      case 'refused':
        this.coordinator.onRefused(vm, m);
        return;
      case 'commit':
        this.member.commit(vm, m.round);
        return;
      case 'abort':
        this.member.abort(vm, m.round, {
          code: m.code,
          reason: m.reason,
          ...(m.failedBy !== undefined ? { failedBy: m.failedBy } : {}),
        });
        return;
    }
  }
}
