import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ReplicationEnv,
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
const VM = 'same01';

/** Test-fails over to `point`: the point and the hash of each disk; then cleans up. */
async function drill(env: ReplicationEnv, point: string): Promise<{ id: string; hashes: string[] }> {
  const m = await srJson<SrManifest>(env.processor, ['test-failover', VM, '--point', point, '--network', 'iso']);
  const hashes = await Promise.all(m.disks.map((d) => sha256(d.path)));
  await srOk(env.processor, ['test-failover-cleanup', VM]);
  return { id: m.point.id, hashes };
}

// The agent loses its data dir and starts a new generation over the same disks: the replica is kept as
// the new generation's base and its records overwrite it through copy-on-write, so the points of the
// old generation restore exactly what they did, also after the new generation rewrote their blocks.
describe('a new generation with the same disk layout', () => {
  let env: ReplicationEnv;
  beforeAll(async () => {
    requireTools(['qemu-io']);
    env = await ReplicationEnv.start('same-layout');
  });
  afterAll(() => env?.close());

  it('keeps the old points byte-exact across the new generation and its writes', async () => {
    const vm = await env.protect(VM, [{ id: 'os', size: 8 * MiB, extents: [{ offset: 2 * MiB, length: MiB }] }]);
    const p = env.processor;
    await srOk(p, ['configure', VM, '--crash-consistent-frequency', '1h']);
    await env.drained(vm);
    const g1 = (await env.agentStatus(vm)).replication!.generation;
    await runOk('qemu-io', ['-f', 'raw', vm.agent.uri('os'), '-c', 'write -P 0x71 0 3M']);
    const first = await drill(env, 'latest');
    // (The schedule also cut one when the initial copy was done.)
    const points = await srJson<SrPoint[]>(p, ['points', VM]);
    expect(points.at(-1)!.id).toBe(first.id);

    await vm.agent.stop();
    vm.dataDir = path.join(env.dir, `${VM}-agent-2`);
    await env.startAgentFor(vm);
    const g2 = (await env.agentStatus(vm)).replication!.generation;
    expect(g2).not.toBe(g1);
    // The new generation rewrites blocks the old point holds, and zeroes some.
    await runOk('qemu-io', ['-f', 'raw', vm.agent.uri('os'), '-c', 'write -P 0x72 1M 3M', '-c', 'write -z 4M 1M']);
    await waitUntil(
      `the processor to take generation ${g2}`,
      async () =>
        (await srJson<{ vms: { generation: string }[] }>(p, ['status', VM])).vms[0]?.generation === g2
          ? true
          : undefined,
      60_000,
      200,
    );
    await env.drained(vm);
    expect(await env.compare(vm)).toEqual([]);

    const listed = await srJson<(SrPoint & { generation: string; retired?: boolean })[]>(p, ['points', VM]);
    expect(listed.slice(0, points.length).map((x) => [x.id, x.generation, x.retired])).toEqual(
      points.map((x) => [x.id, g1, undefined]),
    );
    expect(await drill(env, first.id)).toEqual(first);
    const latest = await drill(env, 'latest');
    expect(latest.hashes).toEqual([await sha256(vm.disks[0]!.path)]);
    // After the new generation's points exist too, the old one is unchanged.
    expect(await drill(env, first.id)).toEqual(first);
  });
});
