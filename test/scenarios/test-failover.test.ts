import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isWriteTempName } from '@site-recovery/shared';
import {
  ReplicationEnv,
  listTree,
  requireTools,
  runSr,
  srJson,
  srOk,
  startBlockWriter,
  waitUntil,
  writerPrefixOf,
  type BlockWriter,
  type SrManifest,
  type SrPoint,
} from '@site-recovery/test';

const BLOCKS = 4096;
/** Files being replaced atomically come and go with replication itself. */
const transient = (name: string): boolean => isWriteTempName(name);

// A test failover is a drill: the test VM's disks are its point, replication of the protected VM goes on
// undisturbed while the test VM exists, and the cleanup leaves nothing behind.
describe('test failover', () => {
  let env: ReplicationEnv;
  let writer: BlockWriter | undefined;
  beforeAll(async () => {
    requireTools(['nbdsh']);
    env = await ReplicationEnv.start('test-failover');
  });
  afterAll(async () => {
    await writer?.stop().catch(() => undefined);
    await env?.close();
  });

  it('materialises a point while replication keeps going, and the cleanup removes all it created', async () => {
    const vm = await env.protect('drill01', [{ id: 'os', size: BLOCKS * 4096 }]);
    const p = env.processor;
    const dataDir = path.join(env.dir, 'processor');
    await env.drained(vm);
    const baseLsn = (await env.agentStatus(vm)).lsn;
    await srOk(p, ['configure', 'drill01', '--crash-consistent-frequency', '1s']);
    writer = await startBlockWriter({ uri: vm.agent.uri('os'), dir: env.dir, blocks: BLOCKS, rate: 400 });
    await waitUntil(
      'points with writes in them',
      async () => {
        const pts = await srJson<SrPoint[]>(p, ['points', 'drill01']);
        return pts.filter((x) => x.lsn > baseLsn + 100).length >= 2 ? pts : undefined;
      },
      30_000,
      250,
    );
    // Stop cutting points so that the data dir's file set only changes by what the test failover does.
    // A scheduler pass that read the old policy may still cut one: wait until writes were applied past
    // the newest point and a whole old period (1 s, plus a pass of 250 ms) went by without a cut.
    await srOk(p, ['configure', 'drill01', '--crash-consistent-frequency', '1h']);
    const configuredAt = Date.now();
    const points = await waitUntil(
      'a 1 s period with writes applied and no point cut, once points are configured hourly',
      async () => {
        const pts = await srJson<SrPoint[]>(p, ['points', 'drill01']);
        const last = pts.at(-1)!;
        const quietSince = Math.max(Date.parse(last.time), configuredAt);
        const applied = (await env.processorVm('drill01'))!.appliedLsn;
        return applied > last.lsn && Date.now() - quietSince > 1500 ? pts : undefined;
      },
      30_000,
      250,
    );
    const newest = points.at(-1)!;
    const before = await listTree(dataDir, transient);

    const appliedBefore = (await env.processorVm('drill01'))!.appliedLsn;
    const m = await srJson<SrManifest>(p, [
      'test-failover',
      'drill01',
      '--point',
      'latest-processed',
      '--network',
      'iso-net',
    ]);
    const appliedAtStart = (await env.processorVm('drill01'))!.appliedLsn;
    // The newest point there is, or one cut at the applied position: never older, never unapplied.
    expect(m).toMatchObject({ vm: 'drill01', kind: 'test-failover' });
    expect(m.point.lsn).toBeGreaterThanOrEqual(Math.max(newest.lsn, m.point.id === newest.id ? 0 : appliedBefore));
    expect(m.point.lsn).toBeLessThanOrEqual(appliedAtStart);
    expect(m.target.network).toBe('iso-net');
    expect(m.disks.map((d) => d.id)).toEqual(['os']);
    const during = await listTree(dataDir, transient);
    for (const d of m.disks) {
      expect(fs.existsSync(d.path)).toBe(true);
      expect(during).toContain(path.relative(dataDir, d.path));
    }

    // While the test VM exists: a second one is refused, and so is an unknown point.
    const again = await runSr(p, [
      'test-failover',
      'drill01',
      '--point',
      'latest-processed',
      '--network',
      'iso-net',
      '--json',
    ]);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/^sr: SR_FAILOVER_IN_PROGRESS: .+/);

    // Replication goes on: writes the agent captured after the test VM was created reach the replica,
    // and the VM stays replicating. (How far behind it runs is a figure: MODE=drill npm run bench:e2e.)
    const target = Math.max((await env.agentStatus(vm)).lsn, appliedAtStart + 1);
    await waitUntil(
      `the processor to apply the writes up to LSN ${target}, captured after the test VM was created`,
      async () => {
        const s = (await env.processorVm('drill01'))!;
        if (s.state !== 'replicating') throw new Error(`drill01 is ${s.state}: ${s.error ?? ''}`);
        return s.appliedLsn >= target ? s : undefined;
      },
      30_000,
      100,
    );
    expect((await env.processorVm('drill01'))!.state).toBe('replicating');

    // The test VM still is exactly its point, after all those writes to the replica.
    expect(await writerPrefixOf(m.disks[0]!.path, await writer.log(), BLOCKS)).toBe(m.point.lsn - baseLsn);

    const cleanup = await srJson<{ removed: string[] }>(p, ['test-failover-cleanup', 'drill01']);
    expect(cleanup.removed.length).toBeGreaterThan(0);
    for (const d of m.disks) expect(fs.existsSync(d.path)).toBe(false);
    // What is left is what was there before, plus at most the undo log of a point that latest-processed
    // cut (a recovery point like any other, kept by retention, not part of the test VM).
    const after = await listTree(dataDir, transient);
    expect(before.filter((f) => !after.includes(f))).toEqual([]);
    const listedNow = new Set((await srJson<SrPoint[]>(p, ['points', 'drill01'])).map((x) => x.id));
    expect(
      after.filter(
        (f) =>
          !before.includes(f) && !(f === `replicas/drill01/points/undo-${m.point.id}.log` && listedNow.has(m.point.id)),
      ),
    ).toEqual([]);

    // Still replicating, and the replica still converges on the source.
    await writer.stop();
    writer = undefined;
    await env.drained(vm);
    expect(await env.compare(vm)).toEqual([]);
  });

  it('refuses points that do not exist with SR_POINT_NOT_FOUND and exit status 2', async () => {
    const p = env.processor;
    await runSr(p, ['test-failover-cleanup', 'drill01']); // whatever a failed first test left behind
    for (const point of ['p-999999999-1', '2000-01-01T00:00:00.000Z']) {
      const r = await runSr(p, ['test-failover', 'drill01', '--point', point, '--network', 'iso-net']);
      expect({ point, code: r.code }).toEqual({ point, code: 2 });
      expect(r.stderr).toMatch(/^sr: SR_POINT_NOT_FOUND: .+\n$/);
      expect(r.stdout).toBe('');
      const f = await runSr(p, ['failover', 'drill01', '--point', point]);
      expect(f.code).toBe(2);
      expect(f.stderr).toMatch(/^sr: SR_POINT_NOT_FOUND: /);
    }
    // Nothing was created by the refusals: a test failover of a real point still works.
    const m = await srJson<SrManifest>(p, [
      'test-failover',
      'drill01',
      '--point',
      'latest-processed',
      '--network',
      'iso-net',
    ]);
    expect(m.kind).toBe('test-failover');
    await srOk(p, ['test-failover-cleanup', 'drill01']);
  });
});
