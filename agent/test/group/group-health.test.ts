import { describe, expect, it } from 'vitest';
import type { AgentStatus } from '../../src/agent-status.js';
import type { GroupStatus } from '../../src/group/group-stats.js';
import { HealthCode, healthOf } from '../../src/health.js';

// A group that cannot cut points leaves every VM protected on its own: the health warns (peers down,
// rounds failing in a row) and stays ok.

const group = (over: Partial<GroupStatus> = {}): GroupStatus => ({
  group: 'shop',
  vm: 'web01',
  coordinator: 'db01',
  term: 3,
  frequencyMs: 60_000,
  holdTimeoutMs: 100,
  listen: '10.0.0.4:20004',
  peers: [{ vm: 'db01', address: '10.0.0.5:20004', connected: true, since: '2026-01-01T00:00:00.000Z' }],
  rounds: { started: 0, committed: 4, aborted: 0, refused: 0, failedInARow: 0 },
  writeHoldMs: { p50: 0.4, p99: 2, max: 3, count: 120 },
  authFailures: { count: 0 },
  ...over,
});

const status = (g: GroupStatus): AgentStatus => ({
  vm: 'web01',
  nbd: '127.0.0.1:10809',
  lsn: 10,
  checkpointLsn: 10,
  journal: {
    firstLsn: 1,
    lastLsn: 10,
    syncedLsn: 10,
    segments: 1,
    bytes: 4096,
    failed: undefined,
    stalled: false,
    maxBytes: 1 << 30,
    segmentBytes: 64 << 20,
    directWrites: true,
  },
  connections: 1,
  refusedConnections: 0,
  stalledWrites: 0,
  group: g,
});

const health = (g: GroupStatus) => healthOf(status(g), { disconnectedMs: 60_000, groupRoundsFailed: 3 });

describe('health of a group member', () => {
  it('has no warnings while every peer is connected and rounds commit', () => {
    expect(health(group())).toEqual({ ok: true, vm: 'web01', problems: [] });
  });

  it('warns, staying ok, when a peer is down, naming it and where it is dialled', () => {
    const h = health(group({ peers: [{ vm: 'db01', address: '10.0.0.5:20004', connected: false, since: 'T' }] }));
    expect(h.ok).toBe(true);
    expect(h.warnings?.map((w) => w.code)).toEqual([HealthCode.GROUP_PEER_DOWN]);
    expect(h.warnings?.[0]?.message).toMatch(/not connected to db01 \(10\.0\.0\.5:20004, since T\)/);
  });

  it('warns once rounds failed the given number of times in a row, with the latest reason', () => {
    const failing = (n: number): GroupStatus =>
      group({
        rounds: { started: 9, committed: 4, aborted: n, refused: 0, failedInARow: n },
        lastFailure: { round: '3.9', code: 'SR_GROUP_TIMEOUT', failedBy: 'db01', reason: 'no READY', at: 'T' },
      });
    expect(health(failing(2)).warnings).toBeUndefined();
    const h = health(failing(3));
    expect(h.ok).toBe(true);
    expect(h.warnings?.map((w) => w.code)).toEqual([HealthCode.GROUP_ROUNDS_FAILING]);
    expect(h.warnings?.[0]?.message).toMatch(/last 3 rounds failed.*3\.9.*SR_GROUP_TIMEOUT because of db01: no READY/);
  });
});
