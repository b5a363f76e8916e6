import { RecordKind, isSrError, type ChangeRecord, type DiskInfo } from '@site-recovery/shared';
import { describe, expect, it } from 'vitest';
import type { Replica, ReplicaStore } from '../../src/replica/replica-store.js';

const MiB = 1 << 20;
const DISKS: DiskInfo[] = [
  { id: 'os', size: 8 * MiB },
  { id: 'data', size: 3 * MiB + 4096 },
];

async function apply(r: Replica, rec: ChangeRecord): Promise<void> {
  await r.apply(rec);
}

function write(lsn: number, disk: number, offset: number, data: Buffer): ChangeRecord {
  return { lsn, kind: RecordKind.WRITE, disk, offset, length: data.length, data };
}

function pattern(length: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) b[i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff;
  return b;
}

async function readAll(r: Replica, disk: number): Promise<Buffer> {
  return r.read(disk, 0, r.info().disks[disk]!.size);
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return isSrError(err) ? err.code : `not an SrError: ${String(err)}`;
  }
  return undefined;
}

async function asyncCodeOf(p: () => Promise<unknown>): Promise<string | undefined> {
  try {
    await p();
  } catch (err) {
    return isSrError(err) ? err.code : `not an SrError: ${String(err)}`;
  }
  return undefined;
}

/**
 * The contract of {@link ReplicaStore} and {@link Replica}, run against every implementation.
 * `open(key)` returns a store over the same storage each time it is called with the same key.
 */
export function replicaStoreContract(name: string, open: (key: string) => Promise<ReplicaStore>): void {
  describe(`${name}: replica store contract`, () => {
    it('starts empty', async () => {
      const s = await open('empty');
      expect(await s.list()).toEqual([]);
      expect(await s.open('web01')).toBeUndefined();
    });

    it('creates a replica of zeroed disks at position 0, copying, and refuses to create it twice', async () => {
      const s = await open('create');
      const r = await s.create('web01', 'g1', DISKS);
      expect(r.info()).toEqual({
        vm: 'web01',
        generation: 'g1',
        disks: DISKS,
        appliedLsn: 0,
        initialSync: { state: 'copying', done: 0, total: 0 },
      });
      expect(await s.list()).toEqual(['web01']);
      for (const [i, d] of DISKS.entries()) {
        expect((await readAll(r, i)).equals(Buffer.alloc(d.size))).toBe(true);
        expect(r.locate(i)).not.toBe('');
      }
      expect(await asyncCodeOf(() => s.create('web01', 'g2', DISKS))).toBe('SR_STATE_MISMATCH');
      await r.close();
    });

    it('applies writes, zeroes and trims exactly, leaving neighbouring bytes alone', async () => {
      const s = await open('apply');
      const r = await s.create('vm1', 'g1', DISKS);
      const model = DISKS.map((d) => Buffer.alloc(d.size));
      const recs: ChangeRecord[] = [
        write(1, 0, 0, pattern(4096, 1)),
        write(2, 0, MiB - 512, pattern(3 * MiB, 2)), // large: the asynchronous path
        write(3, 1, 3 * MiB, pattern(4096, 3)), // ends exactly at the end of the disk
        { lsn: 4, kind: RecordKind.ZERO, disk: 0, offset: 1000, length: 2000 }, // unaligned, inside one block
        { lsn: 5, kind: RecordKind.TRIM, disk: 0, offset: MiB + 4096, length: 2 * MiB }, // large zeroing
        { lsn: 6, kind: RecordKind.ZERO, disk: 1, offset: 0, length: MiB }, // over never-written space
        write(7, 1, 512, pattern(1536, 7)),
      ];
      for (const rec of recs) {
        await apply(r, rec);
        const m = model[rec.disk]!;
        if (rec.kind === RecordKind.WRITE) rec.data!.copy(m, rec.offset);
        else m.fill(0, rec.offset, rec.offset + rec.length);
      }
      for (const [i, m] of model.entries()) expect((await readAll(r, i)).equals(m)).toBe(true);
      await r.close();
    });

    it('refuses records outside the disks with SR_BOUNDS and changes nothing', async () => {
      const s = await open('bounds');
      const r = await s.create('vm1', 'g1', DISKS);
      await apply(r, write(1, 1, 0, pattern(4096, 9)));
      const before = await readAll(r, 1);
      expect(codeOf(() => r.apply(write(2, 1, DISKS[1]!.size - 512, pattern(1024, 1))))).toBe('SR_BOUNDS');
      expect(codeOf(() => r.apply(write(2, 2, 0, pattern(512, 1))))).toBe('SR_BOUNDS');
      expect(
        codeOf(() => r.apply({ lsn: 2, kind: RecordKind.ZERO, disk: 1, offset: DISKS[1]!.size, length: 512 })),
      ).toBe('SR_BOUNDS');
      expect((await readAll(r, 1)).equals(before)).toBe(true);
      expect(await asyncCodeOf(() => r.read(0, DISKS[0]!.size - 10, 20))).toBe('SR_BOUNDS');
      await r.close();
    });

    it('keeps a saved position and the flushed data across a reopen', async () => {
      const s = await open('reopen');
      const r = await s.create('vm1', 'g1', DISKS);
      const data = pattern(128 * 1024, 4);
      await apply(r, write(1, 0, 4 * MiB, data));
      await r.flush();
      await r.savePosition({ appliedLsn: 1, initialSync: { state: 'copying', done: 10, total: 100 } });
      expect(r.info().appliedLsn).toBe(1);
      await r.close();

      const again = await (await open('reopen')).open('vm1');
      expect(again).toBeDefined();
      expect(again!.info()).toEqual({
        vm: 'vm1',
        generation: 'g1',
        disks: DISKS,
        appliedLsn: 1,
        initialSync: { state: 'copying', done: 10, total: 100 },
      });
      expect((await again!.read(0, 4 * MiB, data.length)).equals(data)).toBe(true);
      await again!.close();
    });

    it('applies overlapping savePosition calls in call order', async () => {
      const s = await open('order');
      const r = await s.create('vm1', 'g1', DISKS);
      const saves = [1, 2, 3, 4, 5].map((lsn) =>
        r.savePosition({
          appliedLsn: lsn,
          initialSync: { state: lsn === 5 ? 'done' : 'copying', done: lsn, total: 5 },
        }),
      );
      await Promise.all(saves);
      expect(r.info().appliedLsn).toBe(5);
      await r.close();
      const again = (await (await open('order')).open('vm1'))!;
      expect(again.info().appliedLsn).toBe(5);
      expect(again.info().initialSync).toEqual({ state: 'done', done: 5, total: 5 });
      await again.close();
    });

    it('reset to a new generation with the same disks keeps their data and starts over at 0', async () => {
      const s = await open('reset-same');
      const r = await s.create('vm1', 'g1', DISKS);
      const data = pattern(8192, 5);
      await apply(r, write(1, 1, 8192, data));
      await r.flush();
      await r.savePosition({ appliedLsn: 1, initialSync: { state: 'done', done: 1, total: 1 } });
      const before = await readAll(r, 1);
      await r.reset('g2', DISKS);
      expect(r.info()).toEqual({
        vm: 'vm1',
        generation: 'g2',
        disks: DISKS,
        appliedLsn: 0,
        initialSync: { state: 'copying', done: 0, total: 0 },
      });
      // The old data is the base the new generation's checksum resync compares against.
      expect((await readAll(r, 1)).equals(before)).toBe(true);
      expect(r.retired()).toEqual([]);
      const next = pattern(4096, 8);
      await apply(r, write(1, 1, 0, next));
      await r.close();
      const again = (await (await open('reset-same')).open('vm1'))!;
      expect(again.info()).toMatchObject({ generation: 'g2', appliedLsn: 0, initialSync: { state: 'copying' } });
      expect((await again.read(1, 0, 4096)).equals(next)).toBe(true);
      expect((await again.read(1, 8192, 8192)).equals(data)).toBe(true);
      await again.close();
    });

    it('applies a SYNC marker as nothing, whatever its offset', async () => {
      const s = await open('sync');
      const r = await s.create('vm1', 'g1', DISKS);
      await apply(r, write(1, 0, 0, pattern(4096, 3)));
      const before = await readAll(r, 0);
      await apply(r, { lsn: 2, kind: RecordKind.SYNC, disk: 0, offset: DISKS[0]!.size + DISKS[1]!.size, length: 0 });
      expect((await readAll(r, 0)).equals(before)).toBe(true);
      await r.close();
    });

    it('reset to another disk layout of a replica without points replaces the disks with zeroed ones of the new sizes', async () => {
      const s = await open('reset-other');
      const r = await s.create('vm1', 'g1', DISKS);
      await apply(r, write(1, 0, 0, pattern(4096, 6)));
      await r.flush();
      await r.savePosition({ appliedLsn: 1, initialSync: { state: 'done', done: 1, total: 1 } });
      const next: DiskInfo[] = [
        { id: 'os', size: 2 * MiB },
        { id: 'logs', size: MiB },
      ];
      await r.reset('g2', next);
      expect(r.info()).toMatchObject({ generation: 'g2', disks: next, appliedLsn: 0 });
      expect((await readAll(r, 0)).equals(Buffer.alloc(2 * MiB))).toBe(true);
      await apply(r, write(1, 1, MiB - 4096, pattern(4096, 7)));
      await r.close();
      const again = (await (await open('reset-other')).open('vm1'))!;
      expect(again.info().disks).toEqual(next);
      expect(again.retired()).toEqual([]);
      expect((await again.read(1, MiB - 4096, 4096)).equals(pattern(4096, 7))).toBe(true);
      await again.close();
    });

    it('checks VM names and disk ids before using them (SR_BAD_ID)', async () => {
      const s = await open('ids');
      expect(await asyncCodeOf(() => s.create('../escape', 'g1', DISKS))).toBe('SR_BAD_ID');
      expect(await asyncCodeOf(() => s.create('vm1', 'g1', [{ id: '../x', size: MiB }]))).toBe('SR_BAD_ID');
      expect(await asyncCodeOf(() => s.open('a/b'))).toBe('SR_BAD_ID');
      expect(await s.list()).toEqual([]);
    });

    it('lists every VM with a replica', async () => {
      const s = await open('list');
      const rs = await Promise.all(['b-vm', 'a-vm', 'c.vm'].map((vm) => s.create(vm, 'g1', DISKS.slice(0, 1))));
      expect((await s.list()).sort()).toEqual(['a-vm', 'b-vm', 'c.vm']);
      await Promise.all(rs.map((r) => r.close()));
    });
  });
}
