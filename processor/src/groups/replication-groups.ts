import type { GroupAbort, GroupCommit, GroupMark, Logger } from '@site-recovery/shared';
import type { FailoverService } from '../failover/failover.js';
import type { GroupSplit, Manifest } from '../failover/manifest.js';
import type { RecoveryPoint } from '../points/recovery-point.js';
import type { GroupRecordHooks } from '../stream/markers.js';
import type { VmReplication } from '../stream/vm-replication.js';
import { DEFAULT_GROUP_CONFIG, GroupConfigs, type GroupConfig } from './group-config.js';
import { GroupFailover, type GroupPoint } from './group-failover.js';
import { GroupMembership } from './group-membership.js';
import {
  GroupTracker,
  type GroupPointSummary,
  type GroupTrackerOptions,
  type RoundFailureSummary,
} from './group-tracker.js';

export interface ReplicationGroupsOptions extends GroupTrackerOptions {
  /** Settings of a group nobody configured (`multiVmFrequencyMs` 5 min). */
  readonly defaultGroupConfig?: GroupConfig;
}

/** One group as `GET /status` shows it. */
export interface GroupStatus {
  readonly name: string;
  readonly members: string[];
  readonly multiVmFrequencyMs: number;
  readonly rounds: { completed: number; failed: number; pending: number };
  readonly lastPoint?: GroupPointSummary;
  readonly lastFailure?: RoundFailureSummary;
}

/** What the groups need of the processor. */
export interface ReplicationGroupsContext {
  readonly dataDir: string | undefined;
  readonly log: Logger;
  vm(name: string): VmReplication | undefined;
  vms(): Iterable<VmReplication>;
  /** Relays the VM's policy (its group's multi-VM frequency included) to its agent. */
  sendPolicy(vm: string): Promise<void>;
  readonly failovers: FailoverService;
}

/**
 * The processor's side of multi-VM consistency groups (docs/multi-vm.md): who is in which group,
 * each group's settings, the rounds that become group points, and failing a group over as a whole.
 */
export class ReplicationGroups implements GroupRecordHooks {
  private readonly tracker: GroupTracker;
  private readonly failover: GroupFailover;

  private constructor(
    private readonly ctx: ReplicationGroupsContext,
    private readonly configs: GroupConfigs,
    private readonly membership: GroupMembership,
    o: ReplicationGroupsOptions,
  ) {
    this.tracker = new GroupTracker((vm) => ctx.vm(vm)?.current?.points, ctx.log, o);
    this.failover = new GroupFailover({
      log: ctx.log,
      members: (g) => membership.members(g),
      vm: (name) => ctx.vm(name),
      failovers: ctx.failovers,
    });
  }

  static async open(ctx: ReplicationGroupsContext, o: ReplicationGroupsOptions = {}): Promise<ReplicationGroups> {
    const configs = await GroupConfigs.open(ctx.dataDir, o.defaultGroupConfig ?? DEFAULT_GROUP_CONFIG);
    return new ReplicationGroups(ctx, configs, await GroupMembership.load(ctx.dataDir), o);
  }

  /** Rebuilds the rounds from the replicas' catalogs (at start, before any stream is applied). */
  rebuild(): Promise<void> {
    return this.tracker.rebuild([...this.ctx.vms()].map((v) => v.vm));
  }

  /** The VM's group, if it is in one. */
  of(vm: string): string | undefined {
    return this.membership.of(vm);
  }

  members(group: string): string[] {
    return this.membership.members(group);
  }

  /** The multi-VM frequency the VM's agent is told; `undefined` outside a group. */
  multiVmFrequencyMs(vm: string): number | undefined {
    const g = this.membership.of(vm);
    return g === undefined ? undefined : this.configs.get(g).multiVmFrequencyMs;
  }

  /** The cache-store lists the VM in `group` (or none): the VM's agent names it in its hello. */
  async noteGroup(vm: string, group: string | undefined): Promise<void> {
    if (await this.membership.set(vm, group))
      this.ctx.log.info({ vm, group: group ?? null }, group === undefined ? 'VM left its group' : 'VM is in a group');
  }

  async marked(vm: string, mark: GroupMark, point: RecoveryPoint | undefined): Promise<void> {
    // The agents' word (the hello) wins; a mark fills in members not heard of yet.
    await this.tracker.marked(vm, mark, point);
    for (const m of mark.members) if (this.membership.of(m) === undefined) await this.membership.set(m, mark.group);
  }

  committed(vm: string, commit: GroupCommit): Promise<void> {
    return this.tracker.committed(vm, commit);
  }

  aborted(vm: string, abort: GroupAbort): Promise<void> {
    return this.tracker.aborted(vm, abort);
  }

  status(): GroupStatus[] {
    const names = new Set([...this.configs.configured(), ...this.membership.groups(), ...this.tracker.groupNames()]);
    return [...names].sort().map((name) => ({
      name,
      members: this.membership.members(name),
      multiVmFrequencyMs: this.configs.get(name).multiVmFrequencyMs,
      ...this.tracker.summary(name),
    }));
  }

  config(group: string): GroupConfig {
    return this.configs.get(group);
  }

  /** Changes a group's settings (all or nothing) and relays the new frequency to every member. */
  async putConfig(group: string, body: unknown): Promise<GroupConfig> {
    const next = await this.configs.put(group, body);
    for (const vm of this.membership.members(group)) await this.ctx.sendPolicy(vm);
    return next;
  }

  points(group: string): GroupPoint[] {
    return this.failover.points(group);
  }

  failoverGroup(group: string, body: unknown): Promise<{ vms: Manifest[] }> {
    return this.failover.failover(group, body);
  }

  testFailoverGroup(group: string, body: unknown): Promise<{ vms: Manifest[] }> {
    return this.failover.testFailover(group, body);
  }

  cleanupTestFailoverGroup(group: string): Promise<{ vms: { vm: string; removed: string[] }[] }> {
    return this.failover.cleanupTestFailover(group);
  }

  /** Failing `vm` over alone now would split its group: which group, and the members left replicating. */
  splitOf(vm: string): GroupSplit | undefined {
    const group = this.membership.of(vm);
    if (group === undefined) return undefined;
    const left = this.membership.members(group).filter((m) => m !== vm && this.ctx.vm(m)?.failover === 'none');
    return left.length > 0 ? { group, left } : undefined;
  }
}
