import { describe, expect, it } from 'vitest';
import { pointsToPrune, type RetainedPoint } from '../../src/points/retention.js';

const HOUR = 3_600_000;
const POLICY = { retentionMs: 24 * HOUR, thinning: [{ olderThanMs: 2 * HOUR, keepOneEveryMs: HOUR }] };
const at = (hh: number, mm: number, ss = 0): number => Date.UTC(2026, 0, 5, hh, mm, ss);

/** Rounds of one group, by the coordinator's clock: every 10 min, one just before the top of the hour. */
const ROUNDS = [at(9, 40), at(9, 50), at(9, 59, 58), at(10, 10), at(10, 30), at(10, 59, 59), at(11, 20)];

/**
 * One member's points: its tagged point of each round, cut `lag` ms after the round started by its
 * own processor clock, an app-consistent point cut 2 min after each round, and a newest crash point.
 */
function memberPoints(name: string, lag: number): RetainedPoint[] {
  const out: RetainedPoint[] = [];
  for (const [i, r] of ROUNDS.entries()) {
    out.push({ id: `${name}-r${i}`, time: new Date(r + lag).toISOString(), kind: 'multi-vm', round: { time: r } });
    out.push({ id: `${name}-a${i}`, time: new Date(r + lag + 120_000).toISOString(), kind: 'app' });
  }
  out.push({ id: `${name}-now`, time: new Date(at(16, 0)).toISOString(), kind: 'crash' });
  return out;
}

/** Which rounds a member keeps after thinning. */
function keptRounds(points: RetainedPoint[]): number[] {
  const pruned = new Set(pointsToPrune(points, POLICY));
  return points.filter((p) => p.kind === 'multi-vm' && !pruned.has(p.id)).map((p) => p.round!.time);
}

describe('retention of multi-VM points', () => {
  it('keeps the same group point of each bucket on every member, whatever each member cut it at', () => {
    // One member cuts at once, another 4 s later: the rounds just before 10:00 and 11:00 fall in the
    // next hour by its own clock.
    const a = keptRounds(memberPoints('a', 1000));
    const b = keptRounds(memberPoints('b', 4000));
    expect(a).toEqual(b);
    // One per hour of the coordinator's clock, the newest round of each, in preference to app points.
    expect(a).toEqual([at(9, 59, 58), at(10, 59, 59), at(11, 20)]);
  });

  it('prefers a multi-VM point to a newer app-consistent or crash point of its bucket', () => {
    const points: RetainedPoint[] = [
      { id: 'm', time: new Date(at(9, 10)).toISOString(), kind: 'multi-vm', round: { time: at(9, 10) } },
      { id: 'app', time: new Date(at(9, 40)).toISOString(), kind: 'app' },
      { id: 'crash', time: new Date(at(9, 50)).toISOString(), kind: 'crash' },
      { id: 'now', time: new Date(at(16, 0)).toISOString(), kind: 'crash' },
    ];
    expect(pointsToPrune(points, POLICY)).toEqual(['app', 'crash']);
  });
});
