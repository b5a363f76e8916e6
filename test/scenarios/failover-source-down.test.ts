import fsp from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ReplicationEnv,
  firstDifference,
  getJson,
  requireTools,
  runFioOk,
  runOk,
  srJson,
  srOk,
  waitUntil,
  type ProtectedVm,
  type SrManifest,
  type SrPoint,
} from '@site-recovery/test';

// The source region is gone: agents and the cache-store are killed with SIGKILL. Failover must work
// from the processor alone — to the latest processed point, and to "latest" with a short deadline
// (nothing more can arrive; it must not wait for a cache-store that is not there, nor refuse).
describe('failover with the source region down', () => {
  let env: ReplicationEnv;
  beforeAll(async () => {
    requireTools(['fio', 'qemu-io']);
    // The target network exists in the region, so failover picks addresses inside its subnet.
    env = await ReplicationEnv.start('source-down', {
      region: { networks: [{ name: 'prod-asr', subnets: [{ name: 'web', cidr: '10.0.1.0/24' }] }] },
    });
  });
  afterAll(() => env?.close());

  async function replicate(name: string): Promise<ProtectedVm> {
    const vm = await env.protect(name, [
      { id: 'os', size: 64 << 20, extents: [{ offset: 0, length: 4 << 20 }] },
      { id: 'data', size: 32 << 20 },
    ]);
    await srOk(env.processor, ['configure', name, '--crash-consistent-frequency', '1s']);
    await Promise.all([
      runFioOk([
        '--name=w',
        '--ioengine=nbd',
        `--uri=${vm.agent.uri('os')}`,
        '--rw=randwrite',
        '--bsrange=4k-64k',
        '--iodepth=8',
        '--size=64m',
        '--runtime=3',
        '--time_based',
      ]),
      runOk('qemu-io', [
        '-f',
        'raw',
        vm.agent.uri('data'),
        '-c',
        'write -P 0x5a 1M 3M',
        '-c',
        'write -z 2M 64k',
        '-c',
        'flush',
      ]),
    ]);
    return vm;
  }

  async function expectDisksEqualSource(vm: ProtectedVm, m: SrManifest): Promise<void> {
    expect(m.disks.map((d) => d.id).sort()).toEqual(vm.disks.map((d) => d.id).sort());
    for (const d of vm.disks) {
      const got = m.disks.find((x) => x.id === d.id)!;
      expect((await fsp.stat(got.path)).size).toBe((await fsp.stat(d.path)).size);
      expect({ disk: d.id, firstDifference: await firstDifference(d.path, got.path) }).toEqual({
        disk: d.id,
        firstDifference: -1,
      });
    }
  }

  it('fails over to latest-processed and to latest from the processor alone', async () => {
    const p = env.processor;
    const a = await replicate('down01');
    const b = await replicate('down02');
    // Both claim one source address (say, one was rebuilt from the other): only one may keep it.
    for (const vm of ['down01', 'down02'])
      await srOk(p, ['configure', vm, '--source-network', 'prod', '--source-subnet', 'web', '--source-ip', '10.0.1.7']);
    const last = new Map<string, number>();
    for (const vm of [a, b]) {
      const applied = (await env.drained(vm)).appliedLsn;
      last.set(vm.name, applied);
      // latest-processed is the newest point; wait for one cut after the last write landed.
      await waitUntil(
        `a point of ${vm.name} at LSN ${applied}`,
        async () => {
          const pts = await srJson<SrPoint[]>(p, ['points', vm.name]);
          return pts.at(-1)?.lsn === applied ? true : undefined;
        },
        30_000,
        250,
      );
    }

    // The source region goes away: no clean shutdown of anything there.
    await Promise.all([a.agent.kill(), b.agent.kill(), env.cacheStore.kill()]);
    await waitUntil(
      'the processor to notice the cache-store is gone',
      async () => {
        const h = (await getJson(`http://${p.listen}/status`, p.tokenFile)) as { cacheStore: { connected: boolean } };
        return h.cacheStore.connected ? undefined : true;
      },
      30_000,
    );

    const ma = await srJson<SrManifest>(p, ['failover', 'down01', '--point', 'latest-processed']);
    expect(ma).toMatchObject({ vm: 'down01', kind: 'failover', point: { lsn: last.get('down01') } });
    expect(Number.isNaN(Date.parse(ma.createdAt))).toBe(false);
    await expectDisksEqualSource(a, ma);

    // "latest" waits for records still on their way, up to the deadline: with nothing left to arrive it
    // must give up on them and fail over, not hang (the 30 s is a deadline for the command, not a figure).
    const mb = await srJson<SrManifest>(p, ['failover', 'down02', '--point', 'latest', '--deadline', '3s'], 30_000);
    expect(mb).toMatchObject({ vm: 'down02', kind: 'failover', point: { lsn: last.get('down02') } });
    await expectDisksEqualSource(b, mb);

    // Placement by the default rules (no mapping): <vm>-asr resource group, the source network's name
    // + -asr, the subnet of the source subnet's name, the static address kept — and the second VM on
    // that address gets the next free one.
    expect(ma.target).toMatchObject({
      resourceGroup: 'down01-asr',
      network: 'prod-asr',
      subnet: 'web',
      ip: '10.0.1.7',
    });
    expect(mb.target).toMatchObject({
      resourceGroup: 'down02-asr',
      network: 'prod-asr',
      subnet: 'web',
      ip: '10.0.1.8',
    });
  });
});
