import fsp from 'node:fs/promises';
import { RecordKind, type ChangeRecord, type DiskInfo } from '@site-recovery/shared';
import { describe, expect, it } from 'vitest';
import { useProcessorCases } from '../processor-cases.js';
import type { TestAgent } from '../test-agent.js';
import { Workload, chunks } from '../workload.js';
import { MiB, api, expectImages, getJson, until, vmStatus } from '../helpers.js';

const cases = useProcessorCases('generations');
const VM = 'gen01';

interface Point {
  id: string;
  time: string;
  lsn: number;
  generation: string;
  retired?: boolean;
}
interface Manifest {
  point: { id: string };
  disks: { id: string; size: number; path: string }[];
}

/** A generation's initial copy (random data, then the SYNC marker that completes it). */
function copy(disks: DiskInfo[], seed: number): Workload {
  const w = new Workload(disks, seed);
  w.random(40, 128 * 1024);
  w.sync(1);
  return w;
}

async function send(agent: TestAgent, records: readonly ChangeRecord[]): Promise<void> {
  for (const c of chunks(records, 8))
    await agent.send(c, c.some((r) => r.kind === RecordKind.SYNC) ? { done: 1, total: 1 } : undefined);
}

async function points(listen: string): Promise<Point[]> {
  return getJson<Point[]>(listen, `/vms/${VM}/points`);
}

/** Test-fails over to `id`; returns the recovered disks' bytes and sizes, and cleans up. */
async function recover(listen: string, id: string): Promise<{ sizes: number[]; bytes: Buffer[] }> {
  const r = await api<Manifest>(listen, 'POST', `/vms/${VM}/test-failover`, { point: id, network: 'iso' });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  const bytes = await Promise.all(r.body.disks.map((d) => fsp.readFile(d.path)));
  expect((await api(listen, 'POST', `/vms/${VM}/test-failover-cleanup`)).status).toBe(200);
  return { sizes: r.body.disks.map((d) => d.size), bytes };
}

describe('generations with other disk layouts', () => {
  it('keeps old replicas for their points, fails over to their bytes, refuses a layout past the limit without deleting anything, and takes it once retention made room', async () => {
    const { cs, processor } = await cases.start({
      options: {
        maxRetiredReplicas: 1,
        pointTickMs: 20,
        defaultVmConfig: {
          crashConsistentFrequencyMs: 3_600_000,
          appConsistentFrequencyMs: 3_600_000,
          retentionMs: 3_600_000,
          thinning: [],
          source: {},
          target: {},
        },
      },
    });
    const listen = processor.listen;
    const cut = async (): Promise<string> => (await processor.get(VM)!.cutPoint('crash')).id;
    const layouts: DiskInfo[][] = [
      [
        { id: 'os', size: 4 * MiB },
        { id: 'data', size: 2 * MiB },
      ],
      [{ id: 'os', size: 6 * MiB }],
      [
        { id: 'os', size: 6 * MiB },
        { id: 'logs', size: MiB },
      ],
    ];
    // g1 with a point.
    const g1 = copy(layouts[0]!, 1);
    await send(await cs.agent(VM, 'g1', layouts[0]!), g1.records);
    await cs.tap.confirmedAtLeast(VM, g1.lastLsn, 'g1');
    const p1 = await cut();
    const p1Time = Date.parse((await points(listen))[0]!.time);
    // g2, another layout: g1's replica is retired beside the new one.
    const g2 = copy(layouts[1]!, 2);
    await send(await cs.agent(VM, 'g2', layouts[1]!), g2.records);
    await cs.tap.confirmedAtLeast(VM, g2.lastLsn, 'g2');
    // Retention is a matter of time: p2 is cut more than 1 s after p1, so a 1 s retention later takes p1.
    await until('a second since p1', () => (Date.now() - p1Time > 1100 ? true : undefined));
    const p2 = await cut();
    expect((await points(listen)).map((p) => [p.id, p.generation, p.retired === true])).toEqual([
      [p1, 'g1', true],
      [p2, 'g2', false],
    ]);
    const st = await vmStatus(listen, VM);
    expect(st.retiredReplicas).toEqual([{ generation: 'g1', disks: layouts[0], points: 1 }]);
    expect(st.latestPoint).toMatchObject({ id: p2, generation: 'g2' });
    const old = await recover(listen, p1);
    expect(old.sizes).toEqual(layouts[0]!.map((d) => d.size));
    expectImages(old.bytes, g1.images);
    expectImages((await recover(listen, p2)).bytes, g2.images);

    // g3, yet another layout, past maxRetiredReplicas 1: refused; nothing is deleted, nothing of g3 applied.
    const a3 = await cs.agent(VM, 'g3', layouts[2]!);
    const g3 = copy(layouts[2]!, 3);
    await send(a3, g3.records);
    await a3.ackedThrough(g3.lastLsn);
    const refused = await until('g3 to be refused', async () => {
      const v = await vmStatus(listen, VM);
      return v.state === 'refused' ? v : undefined;
    });
    expect(refused).toMatchObject({
      generation: 'g2',
      errorCode: 'SR_TOO_MANY_REPLICAS',
      refused: { generation: 'g3', disks: layouts[2], code: 'SR_TOO_MANY_REPLICAS' },
    });
    const res = await fetch(`http://${listen}/health`);
    expect(res.status).toBe(503);
    const health = (await res.json()) as { problems: { code: string; vm?: string; message: string }[] };
    expect(health.problems).toEqual([
      {
        code: 'SR_GENERATION_REFUSED',
        vm: VM,
        message: expect.stringMatching(/every recovery point is kept/) as unknown,
      },
    ]);
    expect(cs.tap.confirmed(VM, 'g3')).toBe(0);
    expect((await points(listen)).map((p) => p.id)).toEqual([p1, p2]);
    // The other VMs on the connection replicate on.
    const other = copy(layouts[1]!, 4);
    await send(await cs.agent('gen02', 'x1', layouts[1]!), other.records);
    await cs.tap.confirmedAtLeast('gen02', other.lastLsn);

    // Retention (1 s, measured from the newest point, p2) takes g1's point: its replica goes, and g3 is taken.
    expect((await api(listen, 'PUT', `/vms/${VM}/config`, { retentionMs: 1000 })).status).toBe(200);
    await cs.tap.confirmedAtLeast(VM, g3.lastLsn, 'g3', 30_000);
    const taken = await until('g3 replicating', async () => {
      const v = await vmStatus(listen, VM);
      return v.state === 'replicating' ? v : undefined;
    });
    expect(taken.generation).toBe('g3');
    expect(taken.refused).toBeUndefined();
    expect(taken.retiredReplicas.map((r) => r.generation)).toEqual(['g2']);
    const left = await points(listen);
    expect(left.some((p) => p.id === p1)).toBe(false);
    expect(left.filter((p) => p.generation === 'g2').every((p) => p.retired === true)).toBe(true);
    expect(await api(listen, 'POST', `/vms/${VM}/test-failover`, { point: p1, network: 'iso' })).toMatchObject({
      status: 410,
      body: { code: 'SR_POINT_PRUNED' },
    });
    expectImages((await recover(listen, p2)).bytes, g2.images);
  });
});
