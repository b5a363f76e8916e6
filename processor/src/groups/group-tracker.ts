import {
  KeyedSerialQueue,
  type GroupAbort,
  type GroupCommit,
  type GroupMark,
  type Logger,
} from '@site-recovery/shared';
import type { RecoveryPoint, RoundFailure } from '../points/recovery-point.js';
import type { ReplicaPoints } from '../replica/replica-store.js';
import { Round, compareRounds, stateKey } from './group-round.js';

export interface GroupTrackerOptions {
  /**
   * Rounds of one group waiting for members beyond which the oldest is given up (failed,
   * SR_GROUP_INCOMPLETE): a member that never comes back must not hold memory without bound. A
   * member that lags keeps its rounds open, so this covers an hour of 1 s rounds. Default 4096.
   */
  readonly maxOpenRounds?: number;
  /** Ended rounds remembered per group, so late records of them are recognised. Default 256. */
  readonly maxEndedRounds?: number;
}

export const DEFAULT_MAX_OPEN_ROUNDS = 4096;
export const DEFAULT_MAX_ENDED_ROUNDS = 256;

/** The newest group point, as the status shows it. */
export interface GroupPointSummary {
  /** The group point id: the round. */
  readonly id: string;
  /** The round's time (the coordinator's clock when it started), ISO 8601. */
  readonly time: string;
  readonly members: readonly string[];
}

export interface RoundFailureSummary extends RoundFailure {
  readonly round: string;
}

/** A group's rounds as `/status` shows them. */
export interface GroupRounds {
  readonly rounds: { completed: number; failed: number; pending: number };
  readonly lastPoint?: GroupPointSummary;
  readonly lastFailure?: RoundFailureSummary;
}

interface GroupState {
  readonly rounds: Map<string, Round>;
  completed: number;
  failed: number;
  last?: Round;
  lastFailed?: Round;
}

/**
 * Follows every replication group's rounds as the members' streams are applied (docs/multi-vm.md
 * "The processor"): each member's point cut at its GROUP_MARK carries the round in its catalog entry;
 * a member's GROUP_COMMIT is recorded there; once every member the mark names has committed, each
 * member's point is relabelled 'multi-vm' with the round as group point id. An ABORT, a member
 * resyncing at the mark, or a member that applies a later round's mark without committing this one
 * fails the round for good: its points stay crash-consistent points. Never a partial group point.
 *
 * Everything it decides is written to the catalogs, so a restart rebuilds it from them ({@link
 * rebuild}). Events of one group are handled one at a time; a storage failure propagates to the
 * stream that brought the event, which is then sent again, and handling it again finishes the work.
 */
export class GroupTracker {
  private readonly groups = new Map<string, GroupState>();
  private readonly queue = new KeyedSerialQueue<string>();
  private readonly maxOpen: number;
  private readonly maxEnded: number;

  constructor(
    /** A VM's recovery points; `undefined` when it has no replica. */
    private readonly pointsOf: (vm: string) => ReplicaPoints | undefined,
    private readonly log: Logger,
    o: GroupTrackerOptions = {},
  ) {
    this.maxOpen = o.maxOpenRounds ?? DEFAULT_MAX_OPEN_ROUNDS;
    this.maxEnded = o.maxEndedRounds ?? DEFAULT_MAX_ENDED_ROUNDS;
  }

  /** Rebuilds every round from the tags in the VMs' catalogs; relabels rounds that completed. */
  async rebuild(vms: Iterable<string>): Promise<void> {
    for (const vm of vms) {
      for (const p of this.pointsOf(vm)?.list() ?? []) {
        const tag = p.round;
        if (tag === undefined) continue;
        const r = this.round(tag.group, tag.round);
        r.mark ??= { coordinator: tag.coordinator, members: [...tag.members], time: tag.time };
        r.points.set(vm, p.id);
        r.persisted.set(vm, stateKey(tag.state, p.kind));
        if (tag.state === 'committed') r.committed.add(vm);
        if (tag.state === 'failed')
          r.failure ??= tag.failure ?? { code: 'SR_GROUP_FAILED', reason: 'recorded failed', at: p.time };
      }
    }
    for (const [group, g] of this.groups) {
      const rounds = [...g.rounds.values()].sort((a, b) => compareRounds(a.round, b.round));
      for (const r of rounds) await this.queue.run(group, () => this.settle(r));
      await this.queue.run(group, () => this.trim(group));
    }
  }

  /** `vm` applied `mark`: `point` is the point cut there, `undefined` when it was resyncing. */
  marked(vm: string, mark: GroupMark, point: RecoveryPoint | undefined): Promise<void> {
    return this.queue.run(mark.group, async () => {
      const r = this.round(mark.group, mark.round);
      if (r.mark === undefined) r.mark = { coordinator: mark.coordinator, members: [...mark.members], time: mark.time };
      else if (!sameMembers(r.members, mark.members))
        this.fail(
          r,
          vm,
          'SR_GROUP_PROTOCOL',
          `${vm}'s mark names members ${mark.members.join(', ')}, not ${r.members.join(', ')}`,
        );
      if (!mark.members.includes(vm)) this.fail(r, vm, 'SR_GROUP_PROTOCOL', `${vm} marked a round it is no member of`);
      if (point === undefined) {
        this.fail(
          r,
          vm,
          'SR_RESYNCING',
          `${vm} was resyncing (initial copy not done, or regions written in bitmap mode not yet resynced) at the mark: no point was cut`,
        );
      } else {
        r.points.set(vm, point.id);
        r.persisted.set(vm, stateKey(point.round?.state ?? 'pending', point.kind));
      }
      // A member that has moved on to a later round never commits an earlier one.
      for (const o of this.groups.get(mark.group)!.rounds.values()) {
        if (o.counted || compareRounds(o.round, mark.round) >= 0) continue;
        if (!o.members.includes(vm) || o.committed.has(vm)) continue;
        this.fail(
          o,
          vm,
          'SR_GROUP_NOT_COMMITTED',
          `${vm} applied the mark of round ${mark.round} without committing this one`,
        );
        await this.settle(o);
      }
      await this.settle(r);
      await this.trim(mark.group);
    });
  }

  /** `vm` applied its GROUP_COMMIT of a round (every record up to it has landed). */
  committed(vm: string, c: GroupCommit): Promise<void> {
    return this.queue.run(c.group, async () => {
      const r = this.groups.get(c.group)?.rounds.get(c.round);
      if (r === undefined) {
        this.log.warn(
          { vm, group: c.group, round: c.round },
          'commit of a round this processor has no mark of; ignored',
        );
        return;
      }
      if (r.failure === undefined && !r.complete) {
        if (r.points.has(vm)) r.committed.add(vm);
        else this.fail(r, vm, 'SR_GROUP_NO_MARK', `${vm} committed, but no point of it was cut at the round's mark`);
      }
      await this.settle(r);
    });
  }

  /** `vm` applied a GROUP_ABORT: the round failed. */
  aborted(vm: string, a: GroupAbort): Promise<void> {
    return this.queue.run(a.group, async () => {
      const r = this.round(a.group, a.round);
      if (r.complete) {
        this.log.warn({ vm, group: a.group, round: a.round }, 'abort of a round every member committed; ignored');
        return;
      }
      this.fail(r, a.failedBy, a.code, a.reason);
      this.log.info({ vm, group: a.group, round: a.round, code: a.code }, 'group round aborted');
      await this.settle(r);
      await this.trim(a.group);
    });
  }

  /** The group's rounds for `/status`. */
  summary(group: string): GroupRounds {
    const g = this.groups.get(group);
    if (g === undefined) return { rounds: { completed: 0, failed: 0, pending: 0 } };
    let pending = 0;
    for (const r of g.rounds.values()) if (!r.counted) pending++;
    const last = g.last;
    const failed = g.lastFailed;
    return {
      rounds: { completed: g.completed, failed: g.failed, pending },
      ...(last?.mark !== undefined
        ? { lastPoint: { id: last.round, time: new Date(last.mark.time).toISOString(), members: [...last.members] } }
        : {}),
      ...(failed?.failure !== undefined ? { lastFailure: { round: failed.round, ...failed.failure } } : {}),
    };
  }

  /** Groups with rounds known to the tracker. */
  groupNames(): string[] {
    return [...this.groups.keys()];
  }

  private round(group: string, round: string): Round {
    let g = this.groups.get(group);
    if (g === undefined) this.groups.set(group, (g = { rounds: new Map(), completed: 0, failed: 0 }));
    let r = g.rounds.get(round);
    if (r === undefined) g.rounds.set(round, (r = new Round(group, round)));
    return r;
  }

  /** The first failure of a round is the one kept; a complete round cannot fail any more. */
  private fail(r: Round, failedBy: string | undefined, code: string, reason: string): void {
    if (r.failure !== undefined || r.complete) return;
    r.failure = { ...(failedBy !== undefined ? { failedBy } : {}), code, reason, at: new Date().toISOString() };
  }

  /** Decides completion, writes what each member's point should say, and counts an ended round once. */
  private async settle(r: Round): Promise<void> {
    if (r.failure === undefined && !r.complete && r.allCommitted()) {
      const gone = r.members.filter((m) => !this.holds(m, r.points.get(m)));
      if (gone.length > 0)
        this.fail(
          r,
          gone[0],
          'SR_GROUP_POINT_PRUNED',
          `the point of ${gone.join(', ')} was removed before the round completed`,
        );
      else r.complete = true;
    }
    if (r.mark !== undefined) {
      for (const [vm, id] of r.points) {
        const { key, patch } = r.wanted(vm);
        if (r.persisted.get(vm) === key) continue;
        const p = await this.pointsOf(vm)?.relabel(id, patch);
        if (p === undefined && r.complete) {
          // Removed between the check and its relabel: the round is no group point after all.
          r.complete = false;
          this.fail(r, vm, 'SR_GROUP_POINT_PRUNED', `the point of ${vm} was removed before the round completed`);
          return this.settle(r);
        }
        r.persisted.set(vm, key);
      }
    }
    if (r.counted || (r.failure === undefined && !r.complete)) return;
    r.counted = true;
    const g = this.groups.get(r.group)!;
    if (r.failure !== undefined) {
      g.failed++;
      if (g.lastFailed === undefined || compareRounds(g.lastFailed.round, r.round) < 0) g.lastFailed = r;
      this.log.warn({ group: r.group, round: r.round, ...r.failure }, 'group round failed: no multi-VM point');
    } else {
      g.completed++;
      if (g.last === undefined || compareRounds(g.last.round, r.round) < 0) g.last = r;
      this.log.info({ group: r.group, round: r.round, members: r.members }, 'multi-VM point');
    }
  }

  private holds(vm: string, id: string | undefined): boolean {
    return (
      id !== undefined &&
      (this.pointsOf(vm)
        ?.list()
        .some((p) => p.id === id) ??
        false)
    );
  }

  /** Bounds what is kept: the oldest open rounds past the limit fail, the oldest ended ones are forgotten. */
  private async trim(group: string): Promise<void> {
    const g = this.groups.get(group)!;
    const rounds = [...g.rounds.values()].sort((a, b) => compareRounds(a.round, b.round));
    const open = rounds.filter((r) => !r.counted);
    for (const r of open.slice(0, Math.max(0, open.length - this.maxOpen))) {
      this.fail(r, undefined, 'SR_GROUP_INCOMPLETE', `more than ${this.maxOpen} rounds were waiting for members`);
      await this.settle(r);
    }
    const ended = rounds.filter((r) => r.counted);
    for (const r of ended.slice(0, Math.max(0, ended.length - this.maxEnded)))
      if (r !== g.last && r !== g.lastFailed) g.rounds.delete(r.round);
  }
}

function sameMembers(a: readonly string[], b: readonly string[]): boolean {
  const x = [...a].sort();
  const y = [...b].sort();
  return x.length === y.length && x.every((v, i) => v === y[i]);
}
