import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { RecordKind, type ChangeRecord } from '@site-recovery/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileReplicaStore } from '../../src/replica/file-replica-store.js';
import { pointsToPrune } from '../../src/points/retention.js';
import { UndoLog } from '../../src/points/undo-log.js';
import { tempDir } from '../helpers.js';

let root: { dir: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  root = await tempDir('undo-points');
});
afterAll(async () => {
  await root.cleanup();
});

const GiB = 1024 * 1024 * 1024;

/** Bytes this process has written through write(2) and friends so far. */
function wchar(): number {
  const m = /wchar: (\d+)/.exec(fs.readFileSync('/proc/self/io', 'utf8'));
  return Number(m?.[1]);
}

describe('undo log', () => {
  it('keeps verified entries and truncates a torn tail on open', async () => {
    const file = path.join(root.dir, 'torn.log');
    const log = await UndoLog.create(file, 4096);
    await log.append([
      { disk: 0, offset: 0, length: 4096, data: Buffer.alloc(4096, 7) },
      { disk: 1, offset: 8192, length: 4096, data: undefined },
    ]);
    const good = log.bytes;
    await log.append([{ disk: 0, offset: 4096, length: 4096, data: Buffer.alloc(4096, 9) }]);
    await log.close();
    // A crash mid-append: half of the last entry reached the disk.
    await fsp.truncate(file, good + 2000);
    const again = await UndoLog.open(file, 4096);
    expect(again.bytes).toBe(good);
    expect(again.entries).toBe(2);
    expect((await fsp.stat(file)).size).toBe(good);
    expect(again.has(0, 0) && again.has(1, 2) && !again.has(0, 1)).toBe(true);
    // A flipped byte inside an entry ends the verified part there.
    await again.append([{ disk: 0, offset: 4096, length: 4096, data: Buffer.alloc(4096, 9) }]);
    await again.close();
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.from([0xff]), 0, 1, good + 100);
    fs.closeSync(fd);
    const third = await UndoLog.open(file, 4096);
    expect(third.entries).toBe(2);
    const seen: number[] = [];
    await third.forEach((e) => void seen.push(e.offset));
    expect(seen).toEqual([0, 8192]);
    await third.close();
  });
});

describe('retention', () => {
  const t0 = Date.parse('2030-01-01T00:00:00Z');
  const at = (min: number, kind: 'crash' | 'app' = 'crash') => ({
    id: `p-${min}`,
    time: new Date(t0 + min * 60_000).toISOString(),
    kind,
  });

  it('measures age from the newest point, keeps the last 2 h whole and one an hour before, preferring app-consistent', () => {
    const points = [at(0), at(20, 'app'), at(40), at(60), at(100), at(119), at(200), at(250), at(300)];
    const policy = { retentionMs: 24 * 3600_000, thinning: [{ olderThanMs: 2 * 3600_000, keepOneEveryMs: 3600_000 }] };
    // Newest at 300 min: everything after 180 min stays; before it one per clock hour (the app one
    // in the first, the newest in the second).
    expect(pointsToPrune(points, policy)).toEqual(['p-0', 'p-40', 'p-60', 'p-100']);
    // With no newer points the same set stays, however late it is now.
    expect(pointsToPrune(points.slice(0, 1), policy)).toEqual([]);
    expect(pointsToPrune([at(0), at(10), at(24 * 60 + 5)], { ...policy, thinning: [] })).toEqual(['p-0']);
  });
});

describe('points on a 32 GiB sparse replica', () => {
  it('cut and prune do no I/O proportional to the disk size, and a merged point still restores', async () => {
    const dataDir = path.join(root.dir, 'big');
    const store = new FileReplicaStore(dataDir);
    const disks = [{ id: 'os', size: 32 * GiB }];
    const r = await store.create('big01', 'g1', disks);
    await r.savePosition({ appliedLsn: 0, initialSync: { state: 'done', done: 1, total: 1 } });
    let lsn = 0;
    const write = async (offset: number, byte: number): Promise<void> => {
      const rec: ChangeRecord = {
        lsn: ++lsn,
        kind: RecordKind.WRITE,
        disk: 0,
        offset,
        length: 8192,
        data: Buffer.alloc(8192, byte),
      };
      await r.points.protect([rec], 'g1');
      await r.apply(rec);
    };
    await write(0, 1);
    await write(20 * GiB, 2);
    const cut = async (): Promise<string> => {
      const w0 = wchar();
      // Cost is asserted as bytes written, not time: timings belong to bench:points.
      const p = await r.points.cut({ lsn, generation: 'g1', kind: 'crash', time: new Date() });
      expect(wchar() - w0).toBeLessThan(16 * 1024);
      return p.id;
    };
    const a = await cut();
    await write(0, 3); // saves block 0 (ones) into a's log
    const b = await cut();
    await write(20 * GiB, 4); // saves the 20 GiB block (twos) into b's log
    await write(0, 5); // block 0 already saved for b? no: b's log is new; saves threes
    const c = await cut();
    await write(4096, 6);
    expect(r.points.list().map((p) => p.id)).toEqual([a, b, c]);

    // Remove the middle point: its log merges into a's (a lacks the 20 GiB block).
    let w0 = wchar();
    expect(await r.points.remove([b], true)).toBe(true);
    expect(wchar() - w0).toBeLessThan(512 * 1024);
    expect(r.points.isPruned(b)).toBe(true);
    const target = path.join(root.dir, 'big-a.img');
    const plan = r.points.plan(a)!;
    expect(plan.logs.map((l) => l.pointId)).toEqual([c, a]);
    await r.points.materialize(plan, [target]);
    const fd = fs.openSync(target, 'r');
    const read = (off: number, len: number): Buffer => {
      const buf = Buffer.alloc(len);
      fs.readSync(fd, buf, 0, len, off);
      return buf;
    };
    expect(read(0, 8192).equals(Buffer.alloc(8192, 1))).toBe(true);
    expect(read(20 * GiB, 8192).equals(Buffer.alloc(8192, 2))).toBe(true);
    fs.closeSync(fd);
    // Sparse: the 32 GiB target holds only the few blocks that carry data.
    expect((await fsp.stat(target)).blocks * 512).toBeLessThan(4 * 1024 * 1024);
    await fsp.rm(target);

    // Prune the oldest: its log is deleted, nothing else is touched.
    w0 = wchar();
    expect(await r.points.remove([a], true)).toBe(true);
    expect(wchar() - w0).toBeLessThan(16 * 1024);
    expect(r.points.list().map((p) => p.id)).toEqual([c]);
    await r.close();
  });
});
