import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ReplicationEnv,
  requireTools,
  runSr,
  srJson,
  srOk,
  startBlockWriter,
  waitUntil,
  writerPrefixOf,
  type SrManifest,
  type SrPoint,
} from '@site-recovery/test';

const BLOCKS = 4096; // the whole 16 MiB disk, so every byte of a point is checked

// Recovery points are prefixes (DESIGN.md invariant 3): a writer logs every 4 KiB write it sends through
// the agent; points are cut every second while it runs and thinned / aged out by retention. Every point
// still listed afterwards — the oldest as well as the newest — is materialised by a test failover and
// must be exactly the writer's state after the writes up to the point's LSN.
describe('recovery points', () => {
  let env: ReplicationEnv;
  beforeAll(async () => {
    requireTools(['nbdsh']);
    env = await ReplicationEnv.start('points');
  });
  afterAll(() => env?.close());

  it('every listed point is the source state after a prefix of the writes, at its LSN', async () => {
    const vm = await env.protect('pts01', [{ id: 'os', size: BLOCKS * 4096 }]);
    const p = env.processor;
    await env.drained(vm);
    // Records before the writer (initial-copy markers) take LSNs; from here on only its writes do.
    const baseLsn = (await env.agentStatus(vm)).lsn;
    await srOk(p, [
      'configure',
      'pts01',
      '--crash-consistent-frequency',
      '1s',
      '--retention',
      '8s',
      '--thinning',
      '5s:2s',
    ]);

    const writer = await startBlockWriter({ uri: vm.agent.uri('os'), dir: env.dir, blocks: BLOCKS, rate: 400 });
    const early = await waitUntil(
      'two points',
      async () => {
        const pts = await srJson<SrPoint[]>(p, ['points', 'pts01']);
        return pts.length >= 2 ? pts : undefined;
      },
      30_000,
      250,
    );
    // Long enough for retention to act: the first points aged out, and points older than 5 s thinned.
    await waitUntil(
      'retention to prune the first points while points older than 5 s remain (to be thinned)',
      async () => {
        const pts = await srJson<SrPoint[]>(p, ['points', 'pts01']);
        const newestMs = Date.parse(pts.at(-1)!.time);
        const pruned = !pts.some((x) => x.id === early[0]!.id);
        return pruned && pts.some((x) => newestMs - Date.parse(x.time) > 6000) ? true : undefined;
      },
      60_000,
      250,
    );
    const log = await writer.stop();
    await env.drained(vm);
    const lastLsn = baseLsn + log.ended!;
    expect((await env.agentStatus(vm)).lsn).toBe(lastLsn); // only the writer wrote
    // The last point is cut at the last LSN, and nothing moves after it: retention, measured from the
    // newest point, has then nothing more to take than what the pass that cut it takes. So wait for a
    // catalog that ends at the last LSN and holds nothing older than 8 s; the checks below go on from it.
    await waitUntil(
      'a point at the last LSN, and retention done with the points older than 8 s',
      async () => {
        const pts = await srJson<SrPoint[]>(p, ['points', 'pts01']);
        const newestMs = Date.parse(pts.at(-1)!.time);
        const aged = pts.some((x) => newestMs - Date.parse(x.time) > 8000);
        return pts.at(-1)?.lsn === lastLsn && !aged ? true : undefined;
      },
      30_000,
      250,
    );
    // Freeze the catalog all the same (no more points, no more pruning), so every listed point can be checked.
    await srOk(p, [
      'configure',
      'pts01',
      '--crash-consistent-frequency',
      '1h',
      '--retention',
      '1h',
      '--thinning',
      'none',
    ]);
    const points = await srJson<SrPoint[]>(p, ['points', 'pts01']);

    // Retention worked: the first points are gone, and asking for one says so.
    const listed = new Set(points.map((x) => x.id));
    const pruned = early.filter((x) => !listed.has(x.id));
    expect(pruned.length).toBeGreaterThan(0);
    const gone = await runSr(p, ['test-failover', 'pts01', '--point', pruned[0]!.id, '--network', 'iso-net', '--json']);
    expect(gone.code).toBe(2);
    expect(gone.stderr).toMatch(/^sr: SR_POINT_PRUNED: /);
    // The policy holds on what is left (ages from the newest point): nothing older than 8 s, and past
    // 5 s at most one point per 2 s bucket. Every second of the last few still has its point.
    expect(points.length).toBeGreaterThanOrEqual(5);
    const newestMs = Date.parse(points.at(-1)!.time);
    const buckets = new Set<number>();
    expect(
      points.some((x) => newestMs - Date.parse(x.time) > 5000),
      'points in the thinned range are left',
    ).toBe(true);
    for (const x of points) {
      const age = newestMs - Date.parse(x.time);
      expect(age).toBeLessThanOrEqual(8000);
      if (age > 5000) {
        const bucket = Math.floor(Date.parse(x.time) / 2000);
        expect(buckets.has(bucket)).toBe(false);
        buckets.add(bucket);
      }
    }
    for (const x of points) {
      expect(x.kind).toBe('crash');
      expect(Number.isSafeInteger(x.undoBytes) && x.undoBytes >= 0).toBe(true);
      expect(Number.isNaN(Date.parse(x.time))).toBe(false);
    }
    const byLsn = [...points].sort((a, b) => a.lsn - b.lsn || Date.parse(a.time) - Date.parse(b.time));
    expect(byLsn.map((x) => x.id)).toEqual(points.map((x) => x.id)); // listed oldest first
    expect(new Set(points.map((x) => x.lsn)).size).toBeGreaterThanOrEqual(4); // the writer moved between points

    const prefixes: number[] = [];
    for (const point of points) {
      const m = await srJson<SrManifest>(p, ['test-failover', 'pts01', '--point', point.id, '--network', 'iso-net']);
      expect(m.vm).toBe('pts01');
      expect(m.kind).toBe('test-failover');
      expect(m.point).toMatchObject({ id: point.id, lsn: point.lsn, kind: point.kind });
      expect(m.target.network).toBe('iso-net');
      expect(m.disks.map((d) => [d.id, d.size])).toEqual([['os', BLOCKS * 4096]]);
      const prefix = await writerPrefixOf(m.disks[0]!.path, log, BLOCKS);
      expect({ point: point.id, prefix }).toEqual({ point: point.id, prefix: Math.max(0, point.lsn - baseLsn) });
      prefixes.push(prefix);
      await srOk(p, ['test-failover-cleanup', 'pts01']);
    }
    expect(prefixes).toEqual([...prefixes].sort((a, b) => a - b));
    // The newest point holds everything written: the writer's whole log.
    expect(prefixes.at(-1)).toBe(log.ended);
  });
});
