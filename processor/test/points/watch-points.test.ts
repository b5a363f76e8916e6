import fsp from 'node:fs/promises';
import type { DiskInfo } from '@site-recovery/shared';
import { describe, expect, it } from 'vitest';
import type { Processor } from '../../src/processor.js';
import { DEFAULT_VM_CONFIG } from '../../src/vm-config.js';
import { useProcessorCases } from '../processor-cases.js';
import { Workload } from '../workload.js';
import { MiB, api, deadUrl, expectImages, startProcessor, until, vmStatus } from '../helpers.js';

const DISKS: DiskInfo[] = [{ id: 'os', size: 4 * MiB }];
const VM = 'files01';
const TOTAL = 4 * MiB;

interface Point {
  id: string;
  lsn: number;
  kind: string;
}
interface Manifest {
  point: { id: string; lsn: number };
  disks: { path: string }[];
}

const cases = useProcessorCases('watch-points');

const lsnsOf = async (listen: string): Promise<number[]> =>
  (await api<Point[]>(listen, 'GET', `/vms/${VM}/points`)).body.map((p) => p.lsn);

/** Test-fails over to `point` and checks the disks hold the workload's state at `lsn`. */
async function failsOverTo(listen: string, w: Workload, point: string, lsn: number): Promise<void> {
  const r = await api<Manifest>(listen, 'POST', `/vms/${VM}/test-failover`, { point, network: 'iso' });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  expect(r.body.point.lsn).toBe(lsn);
  expectImages(await Promise.all(r.body.disks.map((d) => fsp.readFile(d.path))), w.imagesAt(lsn));
  expect((await api(listen, 'POST', `/vms/${VM}/test-failover-cleanup`)).status).toBe(200);
}

// A watch-mode agent's records are what scans read of an image another process writes: only at a clean
// scan's marker is the replica a state the image had. The 1 s schedule asks for points; they wait for one.
describe('recovery points of a watch-mode VM', () => {
  it('are cut only at clean-scan markers, also after a restart without the cache-store; latest is the newest of them', async () => {
    const { cs, processor, dataDir } = await cases.start({
      options: { pointTickMs: 20, defaultVmConfig: { ...DEFAULT_VM_CONFIG, crashConsistentFrequencyMs: 1000 } },
    });
    const listen = processor.listen;
    const agent = await cs.agent(VM, 'g1', DISKS, undefined, 'watch');
    const w = new Workload(DISKS, 3);
    // The first scan: every block, its copy-complete marker, and (it was clean) its scan marker.
    w.random(12);
    w.sync(TOTAL);
    const scan1 = w.scan(1).lsn;
    await agent.store(w.range(1, scan1), { done: TOTAL, total: TOTAL });
    await until('a point at the first clean scan', async () => ((await lsnsOf(listen)).length > 0 ? true : undefined));
    expect(await lsnsOf(listen)).toEqual([scan1]);
    expect(await vmStatus(listen, VM)).toMatchObject({ mode: 'watch', watch: { lastCleanScanLsn: scan1 } });

    // Scans that overlapped the writer: records, no marker. The schedule wants a point and gets none.
    w.random(20);
    const overlapped = w.lastLsn;
    await agent.store(w.range(scan1 + 1, overlapped));
    await until('the records applied and the schedule waiting for a clean scan', async () => {
      const s = await vmStatus(listen, VM);
      return s.appliedLsn === overlapped && s.watch?.pointWanted === true ? true : undefined;
    });
    expect(await lsnsOf(listen)).toEqual([scan1]);
    // "Now" is the newest clean scan's point, never the middle of the scans.
    await failsOverTo(listen, w, 'latest', scan1);

    // The next clean scan: its marker takes the point the schedule asked for.
    w.random(3);
    const scan2 = w.scan(2).lsn;
    await agent.store(w.range(overlapped + 1, scan2));
    await until('a point at the second clean scan', async () =>
      (await lsnsOf(listen)).length === 2 ? true : undefined,
    );
    expect(await lsnsOf(listen)).toEqual([scan1, scan2]);
    await failsOverTo(listen, w, 'latest', scan2); // the replica stands right at the scan: cut there
    const [, second] = (await api<Point[]>(listen, 'GET', `/vms/${VM}/points`)).body;
    await failsOverTo(listen, w, second!.id, scan2);

    // More overlapped scans, then the processor restarts with the source region gone: it still knows the
    // VM watches its images, so its schedule cuts nothing at the applied position.
    w.random(5);
    await agent.store(w.range(scan2 + 1, w.lastLsn));
    await until('the last records applied and durable', async () =>
      (await vmStatus(listen, VM)).durableLsn === w.lastLsn ? true : undefined,
    );
    const points = await lsnsOf(listen);
    await processor.close();
    let again: Processor | undefined;
    try {
      again = await startProcessor(dataDir, await deadUrl(), {
        pointTickMs: 20,
        defaultVmConfig: { ...DEFAULT_VM_CONFIG, crashConsistentFrequencyMs: 1000 },
      });
      const l = again.listen;
      await until('the restarted schedule to want a point', async () =>
        (await vmStatus(l, VM)).watch?.pointWanted === true ? true : undefined,
      );
      expect(await vmStatus(l, VM)).toMatchObject({ mode: 'watch', appliedLsn: w.lastLsn });
      expect(await lsnsOf(l)).toEqual(points);
    } finally {
      await again?.close();
    }
  });
});
