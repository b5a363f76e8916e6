import fsp from 'node:fs/promises';
import path from 'node:path';
import { RecordKind, type DiskInfo } from '@site-recovery/shared';
import { describe, expect, it } from 'vitest';
import type { ProcessorOptions } from '../../src/processor.js';
import { useProcessorCases, type ProcessorCase } from '../processor-cases.js';
import type { TestAgent } from '../test-agent.js';
import { Workload } from '../workload.js';
import { MiB, api, expectImages, listTree, until, vmStatus } from '../helpers.js';

const DISKS: DiskInfo[] = [
  { id: 'os', size: 6 * MiB },
  { id: 'data', size: 2 * MiB },
];
const VM = 'app01';
const G = 'g1';

interface Point {
  id: string;
  time: string;
  lsn: number;
  kind: string;
  undoBytes: number;
}
interface Manifest {
  vm: string;
  kind: string;
  point: { id: string; lsn: number; kind: string };
  target: { resourceGroup: string; network: string; subnet: string; ip: string };
  disks: { id: string; size: number; path: string }[];
}
type ApiError = { code: string; message: string };

const cases = useProcessorCases('recovery-points');

/** A fresh cache-store, an agent of VM on it, and a processor pulling from it. */
async function setup(options: ProcessorOptions): Promise<ProcessorCase & { agent: TestAgent }> {
  const c = await cases.start({ options });
  return { ...c, agent: await c.cs.agent(VM, G, DISKS) };
}

/** Sends records `from`..`to` in batches of random size and waits until they are confirmed. */
async function send(agent: TestAgent, w: Workload, from: number, to: number, rnd: () => number): Promise<void> {
  let at = from;
  while (at <= to) {
    const size = 1 + (rnd() % 12);
    const end = Math.min(to, at + size - 1);
    const copyDone = w.records.slice(at - 1, end).some((r) => r.kind === RecordKind.SYNC);
    await agent.send(w.range(at, end), copyDone ? { done: 1, total: 1 } : undefined);
    at = end + 1;
  }
  await cases.current().cs.tap.confirmedAtLeast(VM, to);
}

function rng(seed: number): () => number {
  let x = seed;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>>= 0);
  };
}

async function disksOf(m: Manifest): Promise<Buffer[]> {
  return Promise.all(m.disks.map((d) => fsp.readFile(d.path)));
}

/** Test-fails over to `p`, checks the disks hold exactly the state after `p.lsn`, cleans up, checks nothing is left. */
async function checkPoint(listen: string, dataDir: string, w: Workload, p: Point): Promise<void> {
  // The replica's own files move on meanwhile (the schedule may cut a point): compare the rest.
  const outside = async (): Promise<string[]> => (await listTree(dataDir)).filter((f) => !f.startsWith('replicas/'));
  const before = await outside();
  const r = await api<Manifest>(listen, 'POST', `/vms/${VM}/test-failover`, { point: p.id, network: 'isolated-net' });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  expect(r.body).toMatchObject({
    vm: VM,
    kind: 'test-failover',
    point: { id: p.id, lsn: p.lsn },
    target: { network: 'isolated-net' },
  });
  expectImages(await disksOf(r.body), w.imagesAt(p.lsn));
  const c = await api<{ removed: string[] }>(listen, 'POST', `/vms/${VM}/test-failover-cleanup`);
  expect(c.status).toBe(200);
  expect(c.body.removed.length).toBeGreaterThan(0);
  expect(await outside()).toEqual(before);
  expect(before.some((f) => f.startsWith('test-failover'))).toBe(false);
}

describe('recovery points', () => {
  it('every listed point materialises to exactly its LSN prefix, before and after retention thins them, then fails over and commits', async () => {
    const { dataDir, cs, agent, processor } = await setup({
      pointTickMs: 50,
      // Small blocks so that one batch touches many, and block edges fall inside records.
      defaultVmConfig: {
        crashConsistentFrequencyMs: 1000,
        appConsistentFrequencyMs: 1000,
        retentionMs: 3_600_000,
        thinning: [],
        source: { network: 'prod', subnet: 'web', ip: '10.0.0.5' },
        target: {},
      },
    });
    const listen = processor.listen;
    const rnd = rng(7);
    const w = new Workload(DISKS, 11);
    // Initial copy, completed by a SYNC marker.
    w.random(10, 128 * 1024);
    w.sync(1);
    await send(agent, w, 1, w.lastLsn, rnd);
    expect((await vmStatus(listen, VM)).state).toBe('replicating');

    // Points at many LSNs: app markers inside batches, explicit cuts, and the 1 s schedule.
    let sent = w.lastLsn;
    for (let round = 0; round < 14; round++) {
      w.random(5 + (rnd() % 20), 256 * 1024);
      if (round % 2 === 0) w.app(round);
      w.random(rnd() % 6, 64 * 1024);
      if (round === 6) w.write(0, 0, 4096); // the app point is not the newest: the schedule has something to cut
      await send(agent, w, sent + 1, w.lastLsn, rnd);
      sent = w.lastLsn;
      if (round % 3 === 1) {
        // A cut through the API (a test failover at 'latest-processed' cuts at the applied LSN).
        const t = await api<Manifest>(listen, 'POST', `/vms/${VM}/test-failover`, {
          point: 'latest-processed',
          network: 'iso',
        });
        expect(t.status, JSON.stringify(t.body)).toBe(200);
        expect(t.body.point.lsn).toBe(sent);
        expectImages(await disksOf(t.body), w.images);
        expect((await api(listen, 'POST', `/vms/${VM}/test-failover-cleanup`)).status).toBe(200);
      }
      if (round === 6) {
        const at = sent;
        await until(`the 1 s schedule to cut a crash point at LSN ${at}`, async () => {
          const listed = (await api<Point[]>(listen, 'GET', `/vms/${VM}/points`)).body;
          return listed.some((p) => p.kind === 'crash' && p.lsn === at) ? true : undefined;
        });
      }
    }
    const points = (await api<Point[]>(listen, 'GET', `/vms/${VM}/points`)).body;
    expect(points.length).toBeGreaterThanOrEqual(10);
    expect(points.some((p) => p.kind === 'app')).toBe(true);
    expect(points.some((p) => p.kind === 'crash')).toBe(true);
    const appLsns = w.records.filter((r) => r.kind === 5).map((r) => r.lsn);
    for (const lsn of appLsns) expect(points.find((p) => p.lsn === lsn)?.kind).toBe('app');
    for (const p of points) await checkPoint(listen, dataDir, w, p);

    // Retention thins: the last 1 s keeps everything, older points one per second (app ones preferred).
    await until('a newer point', async () => {
      w.random(4, 64 * 1024);
      await send(agent, w, sent + 1, w.lastLsn, rnd);
      sent = w.lastLsn;
      const latest = (await api<Point[]>(listen, 'GET', `/vms/${VM}/points`)).body.at(-1)!;
      return Date.parse(latest.time) - Date.parse(points.at(-1)!.time) > 1500 ? latest : undefined;
    });
    const put = await api(listen, 'PUT', `/vms/${VM}/config`, {
      thinning: [{ olderThanMs: 1000, keepOneEveryMs: 1000 }],
    });
    expect(put.status).toBe(200);
    await processor.points.tick();
    const thinned = (await api<Point[]>(listen, 'GET', `/vms/${VM}/points`)).body;
    const gone = points.filter((p) => !thinned.some((q) => q.id === p.id));
    expect(gone.length).toBeGreaterThan(0);
    // Some removed points were not the oldest: their logs were merged into their older neighbour.
    expect(gone.some((p) => p.id !== points[0]!.id)).toBe(true);
    for (const p of thinned) await checkPoint(listen, dataDir, w, p);
    const pruned = await api<ApiError>(listen, 'POST', `/vms/${VM}/test-failover`, {
      point: gone[0]!.id,
      network: 'iso',
    });
    expect(pruned).toMatchObject({ status: 410, body: { code: 'SR_POINT_PRUNED' } });

    // A real failover to the oldest point left, while a second one is refused.
    const oldest = thinned[0]!;
    const failing = api<Manifest>(listen, 'POST', `/vms/${VM}/failover`, { point: oldest.id });
    const second = await api<ApiError>(listen, 'POST', `/vms/${VM}/failover`, { point: 'latest-processed' });
    const fo = await failing;
    expect(fo.status, JSON.stringify(fo.body)).toBe(200);
    if (second.status !== 409) throw new Error(`second failover: ${JSON.stringify(second)}`);
    expect(['SR_FAILOVER_IN_PROGRESS', 'SR_FAILED_OVER']).toContain(second.body.code);
    expect(fo.body).toMatchObject({
      kind: 'failover',
      point: { id: oldest.id, lsn: oldest.lsn },
      target: { resourceGroup: `${VM}-asr`, network: 'prod-asr', subnet: 'web', ip: '10.0.0.5' },
    });
    expect(fo.body.disks[0]!.path.startsWith(path.join(dataDir, 'failover', VM, `${VM}-asr`))).toBe(true);
    expectImages(await disksOf(fo.body), w.imagesAt(oldest.lsn));
    expect(
      JSON.parse(await fsp.readFile(path.join(path.dirname(fo.body.disks[0]!.path), 'manifest.json'), 'utf8')),
    ).toEqual(fo.body);
    const st = await vmStatus(listen, VM);
    expect(st).toMatchObject({ state: 'failed-over', failover: 'failed-over' });
    // The stream no longer lands: records stored after the failover reach the processor and are dropped.
    const applied = st.appliedLsn;
    w.random(5);
    await agent.store(w.range(sent + 1, w.lastLsn));
    await cs.tap.sessions
      .at(-1)!
      .waitForSent(
        'the records stored after the failover to reach the processor',
        (m) => m.t === 'batch' && m['vm'] === VM && (m['last'] as number) >= w.lastLsn,
      );
    // The processor takes one message at a time: once another VM's later record is confirmed, these were handled.
    const other = new Workload(DISKS, 12);
    other.write(0, 0, 4096);
    await (await cs.agent('app02', G, DISKS)).store(other.records);
    await cs.tap.confirmedAtLeast('app02', 1);
    expect((await vmStatus(listen, VM)).appliedLsn).toBe(applied);
    expect(await api<ApiError>(listen, 'POST', `/vms/${VM}/failover`, { point: 'latest-processed' })).toMatchObject({
      status: 409,
      body: { code: 'SR_FAILED_OVER' },
    });
    // Test failovers still work after a failover.
    await checkPoint(listen, dataDir, w, thinned.at(-1)!);

    const commit = await api<{ state: string; removed: string[] }>(listen, 'POST', `/vms/${VM}/commit`);
    expect(commit.status).toBe(200);
    const left = (await api<Point[]>(listen, 'GET', `/vms/${VM}/points`)).body;
    expect(left.map((p) => p.id)).toEqual([oldest.id]);
    // Newer points were merged into it: it still restores.
    await checkPoint(listen, dataDir, w, left[0]!);
    expect((await vmStatus(listen, VM)).state).toBe('committed');
    const undoLogs = (await fsp.readdir(path.join(dataDir, 'replicas', VM, 'points'))).filter((f) =>
      f.startsWith('undo-'),
    );
    expect(undoLogs).toHaveLength(1);
  });

  it('refuses clearly: unknown point, unknown VM, bad config, mid-resync, doubled test failover, commit before failover', async () => {
    const { dataDir, cs, agent, processor } = await setup({
      pointTickMs: 20,
      defaultVmConfig: {
        crashConsistentFrequencyMs: 1000,
        appConsistentFrequencyMs: 1000,
        retentionMs: 86_400_000,
        thinning: [],
        source: {},
        target: {},
      },
    });
    const listen = processor.listen;
    const w = new Workload(DISKS, 3);
    w.random(10, 64 * 1024);
    // Mid-resync: the initial copy never completes, so no point may be cut (invariant 5).
    await agent.send(w.range(1, 10));
    await cs.tap.confirmedAtLeast(VM, 10);
    w.app(1);
    await agent.send(w.range(11, 11));
    await cs.tap.confirmedAtLeast(VM, 11);
    // A schedule pass now: with no point yet, one is due at once, and the copy is not done.
    await processor.points.tick();
    expect((await api<Point[]>(listen, 'GET', `/vms/${VM}/points`)).body).toEqual([]);
    expect(await api(listen, 'POST', `/vms/${VM}/failover`, { point: 'latest-processed' })).toMatchObject({
      status: 409,
      body: { code: 'SR_RESYNCING' },
    });
    expect(await api(listen, 'POST', `/vms/${VM}/test-failover`, { point: 'latest', network: 'iso' })).toMatchObject({
      status: 409,
      body: { code: 'SR_RESYNCING' },
    });
    expect((await vmStatus(listen, VM)).failover).toBe('none');

    w.sync(1);
    await agent.send(w.range(12, 12), { done: 1, total: 1 });
    await cs.tap.confirmedAtLeast(VM, 12);
    expect(await api(listen, 'POST', `/vms/${VM}/test-failover`, { point: 'p-99-1', network: 'iso' })).toMatchObject({
      status: 404,
      body: { code: 'SR_POINT_NOT_FOUND' },
    });
    expect(
      await api(listen, 'POST', `/vms/${VM}/test-failover`, { point: 'latest-app-consistent', network: 'iso' }),
    ).toMatchObject({ status: 404, body: { code: 'SR_POINT_NOT_FOUND' } });
    expect(
      await api(listen, 'POST', `/vms/${VM}/test-failover`, { point: '2001-01-01T00:00:00Z', network: 'iso' }),
    ).toMatchObject({ status: 404, body: { code: 'SR_POINT_NOT_FOUND' } });
    expect(
      await api(listen, 'POST', `/vms/${VM}/test-failover`, { point: 'yesterday-ish', network: 'iso' }),
    ).toMatchObject({ status: 400, body: { code: 'SR_BAD_OPTION' } });
    expect(await api(listen, 'POST', `/vms/${VM}/test-failover`, { point: 'latest' })).toMatchObject({
      status: 400,
      body: { code: 'SR_BAD_OPTION' },
    });
    expect(await api(listen, 'GET', `/vms/nope/points`)).toMatchObject({
      status: 404,
      body: { code: 'SR_VM_NOT_FOUND' },
    });
    expect(await api(listen, 'GET', `/vms/..%2Fetc/points`)).toMatchObject({
      status: 400,
      body: { code: 'SR_BAD_ID' },
    });
    expect(await api(listen, 'POST', `/vms/${VM}/commit`)).toMatchObject({
      status: 409,
      body: { code: 'SR_NOT_FAILED_OVER' },
    });
    expect(await api(listen, 'POST', `/vms/${VM}/test-failover-cleanup`)).toMatchObject({
      status: 404,
      body: { code: 'SR_NO_TEST_FAILOVER' },
    });

    // Config: validated as a whole, persisted, nothing changed by a bad request.
    const cfg0 = (await api<Record<string, unknown>>(listen, 'GET', `/vms/${VM}/config`)).body;
    for (const bad of [
      { crashConsistentFrequencyMs: 999 },
      { retentionMs: 16 * 86_400_000 },
      { crashConsistentFrequencyMs: 2000, bogus: 1 },
      { source: { ip: 'x' } },
    ]) {
      expect(await api(listen, 'PUT', `/vms/${VM}/config`, bad)).toMatchObject({
        status: 400,
        body: { code: 'SR_BAD_OPTION' },
      });
    }
    expect((await api(listen, 'GET', `/vms/${VM}/config`)).body).toEqual(cfg0);
    const put = await api<Record<string, unknown>>(listen, 'PUT', `/vms/${VM}/config`, {
      retentionMs: 15 * 86_400_000,
      source: { network: 'prod', subnet: 's1', ip: '10.1.0.4' },
      target: { resourceGroup: 'rg-dr' },
    });
    expect(put.body).toMatchObject({
      retentionMs: 15 * 86_400_000,
      source: { network: 'prod' },
      target: { resourceGroup: 'rg-dr' },
      crashConsistentFrequencyMs: 1000,
    });
    expect(JSON.parse(await fsp.readFile(path.join(dataDir, 'vms', VM, 'config.json'), 'utf8'))).toEqual(put.body);

    // One test failover at a time.
    const t1 = await api<Manifest>(listen, 'POST', `/vms/${VM}/test-failover`, { point: 'latest', network: 'iso' });
    expect(t1.status, JSON.stringify(t1.body)).toBe(200);
    expect(t1.body.point.lsn).toBe(12);
    expectImages(await disksOf(t1.body), w.imagesAt(12));
    expect(await api(listen, 'POST', `/vms/${VM}/test-failover`, { point: 'latest', network: 'iso' })).toMatchObject({
      status: 409,
      body: { code: 'SR_FAILOVER_IN_PROGRESS' },
    });
    expect((await api(listen, 'POST', `/vms/${VM}/test-failover-cleanup`)).status).toBe(200);

    // 'latest' waits for what the cache-store holds; a second failover meanwhile is refused. The link
    // stalls before records 13..20 reach the processor and bounces, so it learns of them from the VM list alone.
    cs.tap.hold = (m) => m.t === 'batch';
    w.random(8, 64 * 1024);
    await agent.store(w.range(13, 20));
    cs.tap.dropAll();
    const behind = await until('the processor to learn that the cache-store holds LSN 20', async () => {
      const v = await vmStatus(listen, VM);
      return v.cacheStoreLastLsn === 20 ? v : undefined;
    });
    expect(behind.appliedLsn).toBe(12);
    const failover = `/vms/${VM}/failover`;
    const failing = api<Manifest>(listen, 'POST', failover, { point: 'latest', deadlineMs: 10_000 });
    // A failover to a point that does not exist is refused with 409 while another runs, else with 404
    // without starting anything: it shows when the first one is under way.
    const busy = await until('the failover to latest to be under way', async () => {
      const r = await api<ApiError>(listen, 'POST', failover, { point: 'p-99-1' });
      return r.status === 404 ? undefined : r;
    });
    expect(busy).toMatchObject({ status: 409, body: { code: 'SR_FAILOVER_IN_PROGRESS' } });
    expect(await api(listen, 'POST', failover, { point: 'latest-processed' })).toMatchObject({
      status: 409,
      body: { code: 'SR_FAILOVER_IN_PROGRESS' },
    });
    cs.tap.release();
    const fo = await failing;
    expect(fo.status, JSON.stringify(fo.body)).toBe(200);
    expect(fo.body.point.lsn).toBe(20);
    expect(fo.body.target).toMatchObject({ resourceGroup: 'rg-dr', network: 'prod-asr', subnet: 's1', ip: '10.1.0.4' });
    expectImages(await disksOf(fo.body), w.imagesAt(20));
  });
});
