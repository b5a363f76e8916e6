import { z } from 'zod';
import { ErrorCode, SrError, checkId, type Logger } from '@site-recovery/shared';
import { PointError, PointErrorCode } from '../api/error-codes.js';
import { parseBody, type FailoverService } from '../failover/failover.js';
import type { Manifest } from '../failover/manifest.js';
import type { VmReplication } from '../stream/vm-replication.js';
import { compareRounds, isRoundId } from './group-round.js';

/** A group point every current member of the group holds. */
export interface GroupPoint {
  /** The group point id: the round. */
  readonly id: string;
  /** The round's time, ISO 8601 (the same on every member). */
  readonly time: string;
  /** Each member's point of it. */
  readonly members: { vm: string; point: string; lsn: number }[];
}

/** What the group failover needs of the processor. */
export interface GroupFailoverContext {
  readonly log: Logger;
  /** The group's current members, in name order (none: the group is unknown here). */
  members(group: string): string[];
  vm(name: string): VmReplication | undefined;
  readonly failovers: FailoverService;
}

const FailoverBody = z.object({ point: z.string().min(1).max(64) }).strict();
const TestBody = z.object({ point: z.string().min(1).max(64), network: z.string().min(1).max(128) }).strict();

/**
 * Failover, test failover and cleanup of a whole replication group to one group point: every member
 * to its own point of the same round. Planned first — the group point resolved on every member, and
 * no member failed over or under test yet — and only then applied, member by member; if a member
 * fails, those done before it are taken back, so the group is never left half failed over.
 */
export class GroupFailover {
  /** Groups with a failover or test failover running (one at a time per group). */
  private readonly running = new Set<string>();

  constructor(private readonly ctx: GroupFailoverContext) {}

  /** Group points every current member holds, oldest first. */
  points(group: string): GroupPoint[] {
    const members = this.ctx.members(checkId('group name', group));
    const byRound = new Map<string, { time: number; members: GroupPoint['members'] }>();
    for (const vm of members) {
      for (const p of this.ctx.vm(vm)?.current?.points.list() ?? []) {
        if (p.kind !== 'multi-vm' || p.group?.name !== group) continue;
        let e = byRound.get(p.group.point);
        if (e === undefined)
          byRound.set(p.group.point, (e = { time: p.round?.time ?? Date.parse(p.time), members: [] }));
        e.members.push({ vm, point: p.id, lsn: p.lsn });
      }
    }
    return [...byRound.entries()]
      .filter(([, e]) => e.members.length === members.length)
      .sort(([a], [b]) => compareRounds(a, b))
      .map(([id, e]) => ({ id, time: new Date(e.time).toISOString(), members: e.members }));
  }

  async failover(group: string, body: unknown): Promise<{ vms: Manifest[] }> {
    const b = parseBody(FailoverBody, body);
    return this.exclusive(group, async () => {
      const plan = this.plan(group, b.point);
      const busy = plan.members.filter((m) => this.ctx.vm(m.vm)?.failover !== 'none');
      const moving = busy.filter((m) => this.ctx.vm(m.vm)?.failover === 'in-progress');
      if (moving.length > 0)
        throw new PointError(
          PointErrorCode.FAILOVER_IN_PROGRESS,
          `a failover of ${moving.map((m) => m.vm).join(', ')} of group ${group} is in progress; nothing was changed`,
        );
      if (busy.length > 0)
        throw new PointError(
          PointErrorCode.FAILED_OVER,
          `${busy.map((m) => m.vm).join(', ')} of group ${group} ${busy.length > 1 ? 'are' : 'is'} failed over already; nothing was changed`,
        );
      const done: Manifest[] = [];
      try {
        for (const m of plan.members) done.push(await this.ctx.failovers.failover(m.vm, { point: m.point }));
      } catch (err) {
        await this.takeBack(
          done.map((d) => d.vm),
          (vm) => this.ctx.failovers.undo(vm),
        );
        throw err;
      }
      this.ctx.log.info({ group, point: plan.id, members: plan.members.map((m) => m.vm) }, 'group failed over');
      return { vms: done };
    });
  }

  async testFailover(group: string, body: unknown): Promise<{ vms: Manifest[] }> {
    const b = parseBody(TestBody, body);
    return this.exclusive(group, async () => {
      const plan = this.plan(group, b.point);
      const busy: string[] = [];
      for (const m of plan.members) if (await this.ctx.failovers.hasTestFailover(m.vm)) busy.push(m.vm);
      if (busy.length > 0)
        throw new PointError(
          PointErrorCode.FAILOVER_IN_PROGRESS,
          `${busy.join(', ')} of group ${group} already ${busy.length > 1 ? 'have' : 'has'} a test failover; clean it up first`,
        );
      const done: Manifest[] = [];
      try {
        for (const m of plan.members)
          done.push(await this.ctx.failovers.testFailover(m.vm, { point: m.point, network: b.network }));
      } catch (err) {
        await this.takeBack(
          done.map((d) => d.vm),
          (vm) => this.ctx.failovers.cleanupTestFailover(vm),
        );
        throw err;
      }
      return { vms: done };
    });
  }

  /** Cleans up the test failover of every member that has one. */
  async cleanupTestFailover(group: string): Promise<{ vms: { vm: string; removed: string[] }[] }> {
    return this.exclusive(group, async () => {
      const members = this.knownMembers(group);
      const out: { vm: string; removed: string[] }[] = [];
      for (const vm of members)
        if (await this.ctx.failovers.hasTestFailover(vm))
          out.push({ vm, removed: (await this.ctx.failovers.cleanupTestFailover(vm)).removed });
      if (out.length === 0)
        throw new PointError(PointErrorCode.NO_TEST_FAILOVER, `no member of group ${group} has a test failover`);
      return { vms: out };
    });
  }

  /** Resolves the group point on every member, changing nothing. */
  private plan(group: string, spec: string): { id: string; members: { vm: string; point: string }[] } {
    const members = this.knownMembers(group);
    if (spec !== 'latest-multi-vm' && !isRoundId(spec))
      throw new SrError(
        ErrorCode.BAD_OPTION,
        `point "${spec}" is not latest-multi-vm or a group point id (TERM.SEQ, as "sr group-points ${group}" lists them)`,
      );
    const points = this.points(group);
    const p = spec === 'latest-multi-vm' ? points.at(-1) : points.find((x) => x.id === spec);
    if (p !== undefined) return { id: p.id, members: p.members };
    if (spec === 'latest-multi-vm')
      throw new PointError(
        PointErrorCode.GROUP_POINT_NOT_FOUND,
        `group ${group} has no group point that every member (${members.join(', ')}) holds`,
      );
    const lacking = members.filter(
      (vm) => !(this.ctx.vm(vm)?.current?.points.list() ?? []).some((x) => x.group?.point === spec),
    );
    throw new PointError(
      PointErrorCode.GROUP_POINT_NOT_FOUND,
      `group point ${spec} of ${group} is not held by ${lacking.join(', ') || 'every member'} (never completed, or pruned by retention)`,
    );
  }

  private knownMembers(group: string): string[] {
    const members = this.ctx.members(checkId('group name', group));
    if (members.length === 0)
      throw new PointError(PointErrorCode.GROUP_NOT_FOUND, `no VM of group ${group} is replicated by this processor`);
    return members;
  }

  private async exclusive<T>(group: string, run: () => Promise<T>): Promise<T> {
    if (this.running.has(group))
      throw new PointError(PointErrorCode.FAILOVER_IN_PROGRESS, `a failover of group ${group} is in progress`);
    this.running.add(group);
    try {
      return await run();
    } finally {
      this.running.delete(group);
    }
  }

  /** Undoes what a group action did to its first members, newest first; a failure there is logged. */
  private async takeBack(vms: readonly string[], undo: (vm: string) => Promise<unknown>): Promise<void> {
    for (const vm of [...vms].reverse()) {
      try {
        await undo(vm);
      } catch (err) {
        this.ctx.log.error({ vm, err: (err as Error).message }, 'could not take back a member of a group action');
      }
    }
  }
}
