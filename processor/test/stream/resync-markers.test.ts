import { RecordKind, type ChangeRecord } from '@site-recovery/shared';
import { describe, expect, it } from 'vitest';
import type { ProcessorOptions } from '../../src/processor.js';
import { InitialSyncTracker, pointsAllowed, resyncPercent } from '../../src/stream/initial-copy-tracker.js';
import { useProcessorCases } from '../processor-cases.js';
import { Workload } from '../workload.js';
import { MiB, api, expectImages, readState, replicaBytes, startProcessor, vmStatus } from '../helpers.js';
import { DISKS, VM } from './stream-vm.js';

const cases = useProcessorCases('resync-markers');

/** The schedule is driven by the test (`points.tick()`): a point is due whenever the replica moved. */
const OPTIONS: ProcessorOptions = {
  pointTickMs: 3_600_000,
  defaultVmConfig: {
    crashConsistentFrequencyMs: 1,
    appConsistentFrequencyMs: 0,
    retentionMs: 86_400_000,
    thinning: [],
    source: {},
    target: {},
  },
};

/** A RESYNC marker: `left` bytes of the VM's disks still dirty (0 ends the resync). */
function resync(w: Workload, left: number): ChangeRecord {
  const r: ChangeRecord = { lsn: w.lastLsn + 1, kind: RecordKind.RESYNC, disk: 0, offset: left, length: 0 };
  w.records.push(r);
  return r;
}

describe('InitialSyncTracker and RESYNC markers', () => {
  it('holds points from a marker with bytes left to one with none, its percentage from the most left', () => {
    const t = new InitialSyncTracker({ state: 'done', done: 100, total: 100 });
    t.noteResync(10, 4 * MiB);
    t.noteResync(11, 8 * MiB); // bitmap mode came back: more dirty than at first
    t.noteResync(20, 2 * MiB);
    t.noteResync(30, 0);
    t.noteResync(20, 2 * MiB); // sent again: ignored
    expect(pointsAllowed(t.at(9))).toBe(true);
    expect(pointsAllowed(t.at(10))).toBe(false);
    expect(t.at(11).resync).toEqual({ remaining: 8 * MiB, total: 8 * MiB });
    expect(resyncPercent(t.at(25).resync!)).toBe(75);
    expect(pointsAllowed(t.at(29))).toBe(false);
    expect(t.at(30)).toEqual({ state: 'done', done: 100, total: 100 });
    t.settle(20);
    expect(t.at(20).resync).toEqual({ remaining: 2 * MiB, total: 8 * MiB });
    t.forgetAfter(20);
    expect(pointsAllowed(t.at(100))).toBe(false);
  });
});

describe('a replica resyncing the regions its agent wrote in bitmap mode', () => {
  it('cuts no point from the first RESYNC marker to the last, across a restart, and points resume after it', async () => {
    const { dataDir, cs, processor } = await cases.start({ options: OPTIONS });
    const agent = await cs.agent(VM, 'g1', DISKS);
    const w = new Workload(DISKS, 21);
    w.random(10, 64 * 1024);
    w.sync(1);
    await agent.send(w.range(1, 11), { done: 1, total: 1 });
    await cs.tap.confirmedAtLeast(VM, 11);
    await processor.points.tick();
    const points = async (listen: string): Promise<{ id: string; lsn: number }[]> =>
      (await api<{ id: string; lsn: number }[]>(listen, 'GET', `/vms/${VM}/points`)).body;
    expect((await points(processor.listen)).map((p) => p.lsn)).toEqual([11]);

    // Bitmap mode began (12), ended (13); dirty regions and the VM's writes follow, an app-consistent
    // marker among them, and a progress marker.
    const entry = resync(w, 64 * 1024).lsn;
    resync(w, 5 * MiB);
    w.write(0, 0, 64 * 1024);
    w.write(1, MiB, 64 * 1024);
    w.app(1);
    w.write(0, 3 * MiB, 64 * 1024);
    resync(w, 2 * MiB);
    await agent.send(w.range(12, w.lastLsn));
    await cs.tap.confirmedAtLeast(VM, w.lastLsn);
    await processor.points.tick();
    expect((await points(processor.listen)).map((p) => p.lsn)).toEqual([11]);
    expect(await vmStatus(processor.listen, VM)).toMatchObject({
      state: 'resyncing',
      resync: { remaining: 2 * MiB, total: 5 * MiB, percent: 60 },
    });
    expect((await readState(dataDir, VM)).initialSync).toMatchObject({ resync: { remaining: 2 * MiB } });

    // A restart mid-resync still knows it is mid-resync.
    await processor.close();
    const again = await startProcessor(dataDir, cs.url, OPTIONS);
    try {
      expect(await vmStatus(again.listen, VM)).toMatchObject({ state: 'resyncing', resync: { percent: 60 } });
      await again.points.tick();
      expect((await points(again.listen)).map((p) => p.lsn)).toEqual([11]);

      w.write(0, 5 * MiB, 64 * 1024);
      const end = resync(w, 0).lsn;
      const from = w.lastLsn - 1;
      await agent.send(w.range(from, end));
      await cs.tap.confirmedAtLeast(VM, end);
      await again.points.tick();
      const after = await points(again.listen);
      expect(after.map((p) => p.lsn)).toEqual([11, end]);
      expect(after.filter((p) => p.lsn >= entry && p.lsn < end)).toEqual([]);
      expect((await vmStatus(again.listen, VM)).state).toBe('replicating');
      expectImages(await replicaBytes(dataDir, VM, DISKS), w.images);
    } finally {
      await again.close();
    }
  });
});
