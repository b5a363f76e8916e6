import { ROUND_PATTERN, type GroupMark } from '@site-recovery/shared';
import type { PointPatch } from '../replica/replica-store.js';
import type { PointKind, RoundFailure, RoundTag, RoundTagState } from '../points/recovery-point.js';

/**
 * One round of a replication group as the processor follows it across its members: the point each
 * member cut at its mark, who committed, and how it ended. A round becomes a group point only when
 * every member its mark names has committed; any failure is final.
 */
export class Round {
  /** Each member's point cut at its mark, by VM. */
  readonly points = new Map<string, string>();
  readonly committed = new Set<string>();
  /** What each member's catalog says of the round now (`state|kind`), to write only what changed. */
  readonly persisted = new Map<string, string>();
  /** The round as its first mark described it; undefined while only an ABORT of it is known. */
  mark: Pick<GroupMark, 'coordinator' | 'members' | 'time'> | undefined;
  failure: RoundFailure | undefined;
  /** Every member committed and still holds its point: the tagged points are (being) relabelled. */
  complete = false;
  /** Counted in the group's figures (once, when it ended). */
  counted = false;

  constructor(
    readonly group: string,
    readonly round: string,
  ) {}

  get members(): readonly string[] {
    return this.mark?.members ?? [];
  }

  allCommitted(): boolean {
    return this.mark !== undefined && this.members.every((m) => this.committed.has(m));
  }

  /** The tag a member's point carries for this round in `state`. */
  tag(state: RoundTagState): RoundTag {
    const m = this.mark!;
    return {
      group: this.group,
      round: this.round,
      members: [...m.members],
      coordinator: m.coordinator,
      time: m.time,
      state,
      ...(state === 'failed' && this.failure !== undefined ? { failure: this.failure } : {}),
    };
  }

  /** What `vm`'s point should say now: the patch and its `state|kind` key. */
  wanted(vm: string): { key: string; patch: PointPatch } {
    if (this.failure !== undefined) return want(this.tag('failed'), 'crash', undefined);
    if (this.complete) return want(this.tag('committed'), 'multi-vm', { name: this.group, point: this.round });
    return want(this.tag(this.committed.has(vm) ? 'committed' : 'pending'), 'crash', undefined);
  }
}

export function stateKey(state: RoundTagState, kind: PointKind): string {
  return `${state}|${kind}`;
}

function want(
  round: RoundTag,
  kind: PointKind,
  group: { name: string; point: string } | undefined,
): { key: string; patch: PointPatch } {
  return { key: stateKey(round.state, kind), patch: { kind, round, group } };
}

/** Orders rounds `<term>.<seq>`: a later term, then a later sequence number, is later. */
export function compareRounds(a: string, b: string): number {
  const [at, as] = a.split('.').map(Number) as [number, number];
  const [bt, bs] = b.split('.').map(Number) as [number, number];
  return at !== bt ? at - bt : as - bs;
}

export function isRoundId(value: string): boolean {
  return ROUND_PATTERN.test(value);
}
