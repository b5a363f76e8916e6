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
    out.push({ id: `${name}-r${i}`, time: new Date(r + lag).toISOString(), kind: 'multi-vm' });
    out.push({ id: `${name}-a${i}`, time: new Date(r + lag + 120_000).toISOString(), kind: 'app' });
  }
  out.push({ id: `${name}-now`, time: new Date(at(16, 0)).toISOString(), kind: 'crash' });
  return out;
}

/** Which rounds a member keeps after thinning (by their index in ROUNDS, as the round's time). */
function keptRounds(points: RetainedPoint[]): number[] {
  const pruned = new Set(pointsToPrune(points, POLICY));
  return points
    .filter((p) => p.kind === 'multi-vm' && !pruned.has(p.id))
    .map((p) => ROUNDS[Number(/-r(\d+)$/.exec(p.id)![1])]!);
}

describe('retention of multi-VM points', () => {
  it('keeps the newest group point of each hour, in preference to the app points of that hour', () => {
    expect(keptRounds(memberPoints('a', 1000))).toEqual([at(9, 59, 58), at(10, 30), at(11, 20)]);
  });

  it('places a group point by when it was cut: a round time from the source prunes no older point', () => {
    // A source that claims its round is from 9:05 cannot move the point it makes at 15:30 into the 9h
    // bucket, where it would win over the points the target kept from that hour (invariant 6).
    // As the catalog lists it: with the round the source sent.
    const forged = {
      id: 'forged',
      time: new Date(at(15, 30)).toISOString(),
      kind: 'multi-vm' as const,
      round: { time: at(9, 5) },
    };
    const points: RetainedPoint[] = [
      { id: 'app-0910', time: new Date(at(9, 10)).toISOString(), kind: 'app' },
      { id: 'crash-0950', time: new Date(at(9, 50)).toISOString(), kind: 'crash' },
      forged,
      { id: 'now', time: new Date(at(16, 0)).toISOString(), kind: 'crash' },
    ];
    expect(pointsToPrune(points, POLICY)).toEqual(['crash-0950']);
  });

  it('prefers a multi-VM point to a newer app-consistent or crash point of its bucket', () => {
    const points: RetainedPoint[] = [
      { id: 'm', time: new Date(at(9, 10)).toISOString(), kind: 'multi-vm' },
      { id: 'app', time: new Date(at(9, 40)).toISOString(), kind: 'app' },
      { id: 'crash', time: new Date(at(9, 50)).toISOString(), kind: 'crash' },
      { id: 'now', time: new Date(at(16, 0)).toISOString(), kind: 'crash' },
    ];
    expect(pointsToPrune(points, POLICY)).toEqual(['app', 'crash']);
  });
});
