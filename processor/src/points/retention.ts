import type { PointKind } from './recovery-point.js';
import type { ThinningTier } from '../vm-config.js';

export interface RetentionPolicy {
  readonly retentionMs: number;
  readonly thinning: readonly ThinningTier[];
}

export interface RetainedPoint {
  readonly id: string;
  readonly time: string;
  readonly kind: PointKind;
  /** A point cut at a replication group's mark: the round's time (the same on every member). */
  readonly round?: { readonly time: number };
}

/**
 * The points a policy removes, oldest first. Ages are measured from the NEWEST point's time, not
 * the clock: when the source is down and no point can be cut, the last ones are what failover
 * needs, so they are kept rather than aged out to nothing. The newest point is never removed.
 *
 * Thinning: a point older than a tier's `olderThanMs` (the oldest tier that applies wins) shares a
 * bucket of `keepOneEveryMs` (aligned to the epoch, so buckets stay put as points age) with its
 * neighbours; each bucket keeps one point: the newest multi-VM point if it has any, else the newest
 * app-consistent one, else the newest.
 *
 * Multi-VM points are placed by their round's time, not by when this member cut them: every member
 * of a group then puts a group point in the same bucket and keeps the same one of a bucket (the
 * newest round), so thinning never keeps group point X on one member and Y on another. That holds
 * while the members' newest points are in the same tier, and across tiers when each tier's interval
 * is a multiple of the younger one's (the default one-tier policy, or 1h then 6h): the newest round of
 * a wide bucket is the newest of the narrow buckets inside it.
 */
export function pointsToPrune(points: readonly RetainedPoint[], policy: RetentionPolicy): string[] {
  const newest = points.at(-1);
  if (newest === undefined) return [];
  const ref = Date.parse(newest.time);
  const tiers = [...policy.thinning].sort((a, b) => b.olderThanMs - a.olderThanMs);
  const prune = new Set<string>();
  const buckets = new Map<string, RetainedPoint[]>();
  for (const p of points.slice(0, -1)) {
    const t = placedAt(p);
    const age = ref - t;
    if (age > policy.retentionMs) {
      prune.add(p.id);
      continue;
    }
    const tier = tiers.findIndex((x) => age > x.olderThanMs);
    if (tier < 0) continue;
    const key = `${tier}:${Math.floor(t / tiers[tier]!.keepOneEveryMs)}`;
    const list = buckets.get(key);
    if (list === undefined) buckets.set(key, [p]);
    else list.push(p);
  }
  for (const list of buckets.values()) {
    const keep = keeper(list);
    for (const p of list) if (p !== keep) prune.add(p.id);
  }
  return points.filter((p) => prune.has(p.id)).map((p) => p.id);
}

/** Multi-VM beats app-consistent beats crash-consistent; then the newest. `list` is oldest first. */
function keeper(list: readonly RetainedPoint[]): RetainedPoint {
  let best = list[0]!;
  for (const p of list) {
    const r = rank(p.kind) - rank(best.kind);
    if (r > 0 || (r === 0 && placedAt(p) >= placedAt(best))) best = p;
  }
  return best;
}

function rank(kind: PointKind): number {
  return kind === 'multi-vm' ? 2 : kind === 'app' ? 1 : 0;
}

/** Where thinning places a point: a multi-VM point at its round's time, any other when it was cut. */
function placedAt(p: RetainedPoint): number {
  return p.kind === 'multi-vm' && p.round !== undefined ? p.round.time : Date.parse(p.time);
}
