import fsp from 'node:fs/promises';
import path from 'node:path';
import { RecordKind, type DiskInfo } from '@site-recovery/shared';
import { describe, expect, it } from 'vitest';
import { CacheStoreFixture } from '../cache-store-fixture.js';
import { Workload, chunks } from '../workload.js';
import {
  MiB,
  api,
  cliArgs,
  expectImages,
  startCli,
  until,
  useCaseDirs,
  vmStatus,
  type CliProcess,
} from '../helpers.js';

const VM = 'db02';
const G = 'g1';
const DISKS: DiskInfo[] = [
  { id: 'os', size: 8 * MiB },
  { id: 'data', size: 4 * MiB },
];

const caseDir = useCaseDirs('points-crash');

interface Point {
  id: string;
  lsn: number;
  kind: string;
}

describe('recovery points across kill -9', () => {
  it('killed right after an undo append, before the records it protects land: every point still materialises exactly', async () => {
    const dir = caseDir();
    const dataDir = path.join(dir, 'processor');
    const w = new Workload(DISKS, 99);
    w.random(15, 256 * 1024);
    w.sync(1);
    for (let i = 0; i < 12; i++) {
      w.random(25, 128 * 1024);
      w.app(i);
    }
    w.random(20, 128 * 1024);
    // The cache-store holds the whole stream; each run of the processor takes it from where its replica stands.
    const cs = await CacheStoreFixture.start(path.join(dir, 'cache-store'));
    const agent = await cs.agent(VM, G, DISKS);
    for (const c of chunks(w.records, 7))
      await agent.send(c, c.some((r) => r.kind === RecordKind.SYNC) ? { done: 1, total: 1 } : undefined);
    await agent.ackedThrough(w.lastLsn);
    const args = cliArgs(cs.url, dataDir, '--undo-block-size', '16K');
    let cli: CliProcess | undefined;
    try {
      // Several kills, each after a different number of durable undo appends.
      for (const appends of [4, 9, 14]) {
        process.env['SR_TEST_KILL_AFTER_UNDO_APPENDS'] = String(appends);
        try {
          cli = await startCli(args);
        } finally {
          delete process.env['SR_TEST_KILL_AFTER_UNDO_APPENDS'];
        }
        const c = cli;
        let deadline: NodeJS.Timeout | undefined;
        const exit = await Promise.race([
          c.exited,
          new Promise<never>((_, reject) => {
            deadline = setTimeout(() => {
              void vmStatus(c.listen, VM).then(
                (st) =>
                  reject(
                    new Error(
                      `not killed after ${appends} undo appends; status ${JSON.stringify(st)}; stderr ${c.stderr().slice(-3000)}`,
                    ),
                  ),
                (err: unknown) => reject(err as Error),
              );
            }, 20_000);
          }),
        ]).finally(() => clearTimeout(deadline));
        expect(exit.signal).toBe('SIGKILL');
      }
      cli = await startCli(args);
      const listen = cli.listen;
      await until(
        'everything applied',
        async () => ((await vmStatus(listen, VM)).appliedLsn === w.lastLsn ? true : undefined),
        30_000,
      );
      const points = (await api<Point[]>(listen, 'GET', `/vms/${VM}/points`)).body;
      const markers = w.records.filter((r) => r.kind === RecordKind.APP).map((r) => r.lsn);
      expect(points.filter((p) => p.kind === 'app').map((p) => p.lsn)).toEqual(markers);
      for (const p of points) {
        const r = await api<{ disks: { path: string }[] }>(listen, 'POST', `/vms/${VM}/test-failover`, {
          point: p.id,
          network: 'iso',
        });
        expect(r.status, JSON.stringify(r.body)).toBe(200);
        expectImages(await Promise.all(r.body.disks.map((d) => fsp.readFile(d.path))), w.imagesAt(p.lsn));
        // The control API takes JSON only, even for an action without parameters (a cross-site form cannot send it).
        expect((await api(listen, 'POST', `/vms/${VM}/test-failover-cleanup`, {})).status).toBe(200);
      }
      cli.child.kill('SIGTERM');
      expect((await cli.exited).code).toBe(0);
    } finally {
      cli?.child.kill('SIGKILL');
      await cs.stop();
    }
  });
});
