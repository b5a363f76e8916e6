import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ReplicationEnv,
  makeImage,
  requireTools,
  runOk,
  sha256,
  srJson,
  srOk,
  waitUntil,
  type SrManifest,
  type SrPoint,
} from '@site-recovery/test';

const MiB = 1 << 20;
const VM = 'lay01';

interface ListedPoint extends SrPoint {
  generation: string;
  retired?: boolean;
}

interface Drill {
  /** The point failed over to. */
  id: string;
  disks: [string, number][];
  hashes: string[];
}

/** Test-fails over to `point`: the point, the manifest's disks (id, size) and the hash of each; then cleans up. */
async function drill(env: ReplicationEnv, point: string): Promise<Drill> {
  const m = await srJson<SrManifest>(env.processor, ['test-failover', VM, '--point', point, '--network', 'iso']);
  const hashes = await Promise.all(m.disks.map((d) => sha256(d.path)));
  await srOk(env.processor, ['test-failover-cleanup', VM]);
  return { id: m.point.id, disks: m.disks.map((d) => [d.id, d.size]), hashes };
}

// The source starts over with another disk layout (a disk grown, one added, a fresh agent data dir):
// the target keeps the old replica and its points beside the new one (DESIGN.md invariant 6), and a
// failover to an old point gives the very bytes it gave before.
describe('a new generation with another disk layout', () => {
  let env: ReplicationEnv;
  beforeAll(async () => {
    requireTools(['qemu-io']);
    env = await ReplicationEnv.start('new-layout');
  });
  afterAll(() => env?.close());

  it('keeps the old points listed, and they fail over to the same bytes as before', async () => {
    const vm = await env.protect(VM, [
      { id: 'os', size: 8 * MiB, extents: [{ offset: MiB, length: 2 * MiB }] },
      { id: 'data', size: 4 * MiB },
    ]);
    const p = env.processor;
    await srOk(p, ['configure', VM, '--crash-consistent-frequency', '1h']);
    await env.drained(vm);
    const g1 = (await env.agentStatus(vm)).replication!.generation;
    // Two points of the first layout, each failed over once and hashed.
    await runOk('qemu-io', ['-f', 'raw', vm.agent.uri('os'), '-c', 'write -P 0x61 0 1M']);
    await runOk('qemu-io', ['-f', 'raw', vm.agent.uri('data'), '-c', 'write -P 0x62 512K 1M']);
    const a = await drill(env, 'latest');
    await runOk('qemu-io', ['-f', 'raw', vm.agent.uri('os'), '-c', 'write -P 0x63 512K 2M']);
    const b = await drill(env, 'latest');
    // (The schedule also cut one when the initial copy was done.)
    const before = await srJson<ListedPoint[]>(p, ['points', VM]);
    expect(before.map((x) => x.id)).toEqual(expect.arrayContaining([a.id, b.id]));
    expect(a.disks).toEqual([
      ['os', 8 * MiB],
      ['data', 4 * MiB],
    ]);
    expect(a.hashes).not.toEqual(b.hashes);

    // The agent is replaced: fresh data dir, the os disk grown to 12 MiB, the data disk swapped for a logs disk.
    await vm.agent.stop();
    const os = vm.disks[0]!.path;
    await fsp.truncate(os, 12 * MiB);
    const logs = path.join(env.dir, `${VM}-logs.img`);
    await makeImage(logs, 2 * MiB, [{ offset: 0, length: 256 * 1024 }]);
    vm.disks.splice(0, vm.disks.length, { id: 'os', path: os }, { id: 'logs', path: logs });
    vm.dataDir = path.join(env.dir, `${VM}-agent-2`);
    await env.startAgentFor(vm);
    const g2 = (await env.agentStatus(vm)).replication!.generation;
    expect(g2).not.toBe(g1);
    await runOk('qemu-io', ['-f', 'raw', vm.agent.uri('logs'), '-c', 'write -P 0x64 1M 512K']);
    await waitUntil(
      `the processor to take generation ${g2} and its logs disk`,
      async () => ((await env.processorVm(VM))?.disks.some((d) => d.id === 'logs') === true ? true : undefined),
      60_000,
      200,
    );
    await env.drained(vm);
    const now = (await env.processorVm(VM))!;
    expect(now.disks.map((d) => [d.id, d.size])).toEqual([
      ['os', 12 * MiB],
      ['logs', 2 * MiB],
    ]);
    expect(await env.compare(vm)).toEqual([]);

    // The old points are still listed, with their generation, and restore exactly what they did.
    const after = await srJson<ListedPoint[]>(p, ['points', VM]);
    expect(after.slice(0, before.length).map((x) => x.id)).toEqual(before.map((x) => x.id));
    expect(await drill(env, a.id)).toEqual(a);
    expect(await drill(env, b.id)).toEqual(b);
    expect(after.slice(0, before.length).map((x) => [x.id, x.generation, x.retired])).toEqual(
      before.map((x) => [x.id, g1, true]),
    );
    // 'latest' belongs to the new layout.
    const latest = await drill(env, 'latest');
    expect(latest.disks).toEqual([
      ['os', 12 * MiB],
      ['logs', 2 * MiB],
    ]);
    expect(latest.hashes).toEqual(await Promise.all(vm.disks.map((d) => sha256(d.path))));
    const status = (await srJson<{ vms: { vm: string; retiredReplicas: unknown[] }[] }>(p, ['status', VM])).vms[0]!;
    expect(status.retiredReplicas).toEqual([
      {
        generation: g1,
        disks: [
          { id: 'os', size: 8 * MiB },
          { id: 'data', size: 4 * MiB },
        ],
        points: before.length,
      },
    ]);

    // A real failover to the oldest point: the first layout's disks, the same bytes.
    const m = await srJson<SrManifest>(p, ['failover', VM, '--point', a.id]);
    expect(m.disks.map((d) => [d.id, d.size])).toEqual(a.disks);
    expect(await Promise.all(m.disks.map((d) => sha256(d.path)))).toEqual(a.hashes);
  });
});
