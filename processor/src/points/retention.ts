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
 * Every point is placed by when this processor cut it, never by a time the source sent: a group mark's
 * round time comes from the source region, and a point placed by it in an older bucket would there
 * prune the points the target kept (invariant 6). The price: members that applied a round on either
 * side of a bucket's edge may keep different group points of that bucket, and a group point not held
 * by every member is not offered for a group failover (`GET /groups/:group/points`).
 */
export function pointsToPrune(points: readonly RetainedPoint[], policy: RetentionPolicy): string[] {
  const newest = points.at(-1);
  if (newest === undefined) return [];
  const ref = Date.parse(newest.time);
  const tiers = [...policy.thinning].sort((a, b) => b.olderThanMs - a.olderThanMs);
  const prune = new Set<string>();
  const buckets = new Map<string, RetainedPoint[]>();
  for (const p of points.slice(0, -1)) {
    const t = Date.parse(p.time);
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
    if (r > 0 || (r === 0 && Date.parse(p.time) >= Date.parse(best.time))) best = p;
  }
  return best;
}

function rank(kind: PointKind): number {
  return kind === 'multi-vm' ? 2 : kind === 'app' ? 1 : 0;
}
