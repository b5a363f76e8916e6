import { describe, expect, it } from 'vitest';
import { Backoff } from '@site-recovery/shared';
import { InitialSyncTracker, syncPercent } from '../../src/stream/initial-copy-tracker.js';
import { LagStats } from '../../src/stream/lag-stats.js';

describe('Backoff', () => {
  it('doubles up to the maximum, without jitter exactly', () => {
    const b = new Backoff({ initialDelayMs: 100, maxDelayMs: 1000, jitter: 0 });
    expect([b.next(), b.next(), b.next(), b.next(), b.next(), b.next()]).toEqual([100, 200, 400, 800, 1000, 1000]);
    b.reset();
    expect(b.next()).toBe(100);
  });

  it('takes up to the jitter fraction off each delay', () => {
    const low = new Backoff({ initialDelayMs: 1000, maxDelayMs: 1000, jitter: 0.5 }, () => 0.999999);
    const high = new Backoff({ initialDelayMs: 1000, maxDelayMs: 1000, jitter: 0.5 }, () => 0);
    expect(low.next()).toBe(500);
    expect(high.next()).toBe(1000);
  });
});

describe('InitialSyncTracker', () => {
  it('counts progress only once its record is reached, and stays done', () => {
    const t = new InitialSyncTracker({ state: 'copying', done: 0, total: 0 });
    t.note(10, { done: 50, total: 100 });
    t.note(20, { done: 100, total: 100 });
    t.note(15, { done: 70, total: 100 }); // out of order (a batch sent again): ignored
    expect(t.at(9)).toEqual({ state: 'copying', done: 0, total: 0 });
    expect(t.at(10)).toEqual({ state: 'copying', done: 50, total: 100 });
    expect(syncPercent(t.at(19))).toBe(50);
    expect(t.at(20)).toEqual({ state: 'done', done: 100, total: 100 });
    t.settle(20);
    t.note(30, { done: 10, total: 100 });
    expect(t.at(30).state).toBe('done');
  });

  it('forgets reports past a rewind so they can be made again', () => {
    const t = new InitialSyncTracker({ state: 'copying', done: 0, total: 0 });
    t.note(10, { done: 10, total: 40 });
    t.note(20, { done: 20, total: 40 });
    t.forgetAfter(10);
    expect(t.at(100)).toMatchObject({ done: 10 });
    t.note(20, { done: 20, total: 40 });
    expect(t.at(100)).toMatchObject({ done: 20 });
  });
});

describe('LagStats', () => {
  it('reports percentiles of the recent window', () => {
    const l = new LagStats(100);
    expect(l.summary()).toEqual({ p50: null, p99: null, samples: 0 });
    for (let i = 0; i < 1000; i++) l.add(i < 900 ? 1_000_000 : i - 900);
    expect(l.summary()).toEqual({ p50: 50, p99: 99, samples: 100 });
  });
});
