import { describe, expect, it } from 'vitest';
import type { AgentStatus } from '../src/agent-status.js';
import { HealthCode, healthOf } from '../src/health.js';
import type { ReplicationStatus } from '../src/replication/agent-replication.js';

const NOW = Date.parse('2025-01-01T12:00:00.000Z');

const well: AgentStatus = {
  vm: 'web01',
  nbd: '127.0.0.1:10809',
  lsn: 10,
  checkpointLsn: 8,
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
};

function replicating(stream: Partial<ReplicationStatus['stream']>, disconnectedSince?: number): AgentStatus {
  return {
    ...well,
    replication: {
      generation: 'g1',
      stream: {
        url: 'ws://cache:7400',
        state: 'streaming',
        ackedLsn: 10,
        sentLsn: 10,
        inFlightBytes: 0,
        windowFull: false,
        bytesSent: 0,
        rawBytesSent: 0,
        bandwidth: { limitBytesPerSecond: 0, burstBytes: 0, held: false, heldMs: 0 },
        reconnects: 0,
        lastError: undefined,
        ...stream,
      },
      ...(disconnectedSince !== undefined ? { disconnectedSince: new Date(disconnectedSince).toISOString() } : {}),
      initialCopy: { state: 'done', copiedBytes: 1, totalBytes: 1, percent: 100 },
    },
  };
}

const codes = (s: AgentStatus): string[] => healthOf(s, { disconnectedMs: 60_000 }, NOW).problems.map((p) => p.code);

// What a monitor alerts on: each condition that refuses or holds the VM's writes, or stops its
// replication, is named by its own code.
describe('agent health', () => {
  it('is ok with nothing wrong, and while a cache-store outage is shorter than the threshold', () => {
    expect(healthOf(well, { disconnectedMs: 60_000 }, NOW)).toEqual({ ok: true, vm: 'web01', problems: [] });
    expect(codes(replicating({ state: 'waiting', lastError: 'ECONNREFUSED' }, NOW - 59_000))).toEqual([]);
  });

  it('names a cache-store outage once it has lasted the threshold, with the URL and the last error', () => {
    const h = healthOf(
      replicating({ state: 'connecting', lastError: 'ECONNREFUSED' }, NOW - 61_000),
      {
        disconnectedMs: 60_000,
      },
      NOW,
    );
    expect(h.ok).toBe(false);
    expect(h.problems.map((p) => p.code)).toEqual([HealthCode.CACHE_STORE_UNREACHABLE]);
    expect(h.problems[0]!.message).toMatch(/ws:\/\/cache:7400.*61 s.*ECONNREFUSED/);
  });

  it('names a stopped stream at once, without waiting for the outage threshold', () => {
    expect(codes(replicating({ state: 'failed', lastError: 'SR_SEQUENCE: ...' }, NOW - 1000))).toEqual([
      HealthCode.STREAM_FAILED,
    ]);
  });

  it('names a failed journal and a journal stalled at its cap', () => {
    const failed = { ...well, journal: { ...well.journal, failed: 'ENOSPC: no space left on device' } };
    const stalled = { ...well, journal: { ...well.journal, stalled: true }, stalled: 'journal at its cap' };
    expect(codes(failed)).toEqual([HealthCode.JOURNAL_FAILED]);
    expect(codes(stalled)).toEqual([HealthCode.JOURNAL_STALLED]);
  });

  it('warns, leaving the agent healthy, while the VM is in bitmap mode and while it resyncs, saying how much is dirty', () => {
    const mode = { since: '2025-01-01T11:59:00.000Z', chunkBytes: 65536, entered: 1 };
    const bitmap = { ...well, mode: { ...mode, state: 'bitmap' as const, dirtyBytes: 5 << 20 } };
    const h = healthOf(bitmap, { disconnectedMs: 60_000 }, NOW);
    expect(h.ok).toBe(true);
    expect(h.warnings?.map((w) => w.code)).toEqual([HealthCode.BITMAP_MODE]);
    expect(h.warnings?.[0]?.message).toMatch(/bitmap mode since 2025-01-01T11:59:00.000Z.*5242880 bytes dirty/);
    const resync = { startLsn: 11, resyncedBytes: 1 << 20, totalBytes: 4 << 20, percent: 25 };
    const resyncing = { ...well, mode: { ...mode, state: 'resyncing' as const, dirtyBytes: 3 << 20, resync } };
    const r = healthOf(resyncing, { disconnectedMs: 60_000 }, NOW);
    expect(r.ok).toBe(true);
    expect(r.warnings?.map((w) => w.code)).toEqual([HealthCode.RESYNCING]);
    expect(r.warnings?.[0]?.message).toMatch(/25% done, 3145728 bytes left/);
    const streaming = { ...well, mode: { ...mode, state: 'streaming' as const, dirtyBytes: 0 } };
    expect(healthOf(streaming, { disconnectedMs: 60_000 }, NOW)).toEqual({ ok: true, vm: 'web01', problems: [] });
  });
});
