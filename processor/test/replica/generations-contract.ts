import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { RecordKind, type ChangeRecord, type DiskInfo } from '@site-recovery/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Replica, ReplicaStore } from '../../src/replica/replica-store.js';

const MiB = 1 << 20;
const DISKS: DiskInfo[] = [
  { id: 'os', size: 4 * MiB },
  { id: 'data', size: 2 * MiB },
];
const OTHER: DiskInfo[] = [
  { id: 'os', size: 6 * MiB },
  { id: 'logs', size: MiB },
];

export function pattern(length: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) b[i] = (i * 29 + seed * 13 + (i >> 10)) & 0xff;
  return b;
}

/** Applies records the way the processor does: their overwritten blocks saved first (write-ahead). */
export async function applyProtected(r: Replica, generation: string, recs: readonly ChangeRecord[]): Promise<void> {
  await r.points.protect(recs, generation);
  for (const rec of recs) await r.apply(rec);
  await r.flush();
}

/** A model of the disks: what the replica must hold after the records. */
export function model(disks: readonly DiskInfo[], recs: readonly ChangeRecord[], base?: Buffer[]): Buffer[] {
  const m = base?.map((b) => Buffer.from(b)) ?? disks.map((d) => Buffer.alloc(d.size));
  for (const r of recs) {
    if (r.kind === RecordKind.WRITE) r.data!.copy(m[r.disk]!, r.offset);
    else if (r.kind === RecordKind.ZERO || r.kind === RecordKind.TRIM)
      m[r.disk]!.fill(0, r.offset, r.offset + r.length);
  }
  return m;
}

/** The first generation of a test: data on both disks, the initial copy done, one point cut after it. */
export async function firstGeneration(r: Replica): Promise<{ images: Buffer[]; point: string }> {
  const recs: ChangeRecord[] = [
    write(1, 0, 0, pattern(MiB, 1)),
    write(2, 0, 3 * MiB, pattern(256 * 1024, 2)),
    write(3, 1, 512 * 1024, pattern(MiB, 3)),
  ];
  await applyProtected(r, 'g1', recs);
  await r.savePosition({ appliedLsn: 3, initialSync: { state: 'done', done: 1, total: 1 } });
  const p = await r.points.cut({ lsn: 3, generation: 'g1', kind: 'crash', time: new Date() });
  return { images: model(DISKS, recs), point: p.id };
}

export function write(lsn: number, disk: number, offset: number, data: Buffer): ChangeRecord {
  return { lsn, kind: RecordKind.WRITE, disk, offset, length: data.length, data };
}

export function zero(lsn: number, disk: number, offset: number, length: number): ChangeRecord {
  return { lsn, kind: RecordKind.ZERO, disk, offset, length };
}

/**
 * What every replica store does when the source starts a new generation (`Replica.reset`): no point
 * is lost or changed, whatever the new generation's layout. `open(key)` returns a store over the same
 * storage each time it is called with the same key.
 */
export function replicaGenerationsContract(name: string, open: (key: string) => Promise<ReplicaStore>): void {
  describe(`${name}: recovery points across generations`, () => {
    let tmp: string;
    beforeAll(async () => {
      tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'sr-generations-'));
    });
    afterAll(async () => {
      await fsp.rm(tmp, { recursive: true, force: true });
    });

    /** Recovers point `id` into files of its own; returns their bytes. */
    async function restore(r: Replica, id: string): Promise<Buffer[]> {
      const plan = r.points.plan(id);
      expect(plan, `a plan for point ${id}`).toBeDefined();
      const dir = await fsp.mkdtemp(path.join(tmp, 'restore-'));
      const targets = plan!.disks.map((d) => path.join(dir, `${d.id}.img`));
      await r.points.materialize(plan!, targets);
      return Promise.all(targets.map((t) => fsp.readFile(t)));
    }

    it('same layout: the new generation overwrites the kept data through copy-on-write; the old point restores exactly', async () => {
      const s = await open('gen-same');
      const r = await s.create('vm1', 'g1', DISKS);
      const { images, point } = await firstGeneration(r);
      await r.reset('g2', DISKS);
      // As a new generation's copy sends them: a changed chunk, zero chunks over data and over zeroes.
      const g2 = [
        write(1, 0, 128 * 1024, pattern(MiB, 9)),
        zero(2, 0, 3 * MiB, MiB),
        zero(3, 1, 0, 2 * MiB),
        zero(4, 0, 2 * MiB, 512 * 1024),
      ];
      await applyProtected(r, 'g2', g2);
      const now = model(DISKS, g2, images);
      for (const [i, m] of now.entries()) expect((await r.read(i, 0, m.length)).equals(m)).toBe(true);
      expect(r.points.list().map((p) => [p.id, p.generation, p.retired ?? false])).toEqual([[point, 'g1', false]]);
      const restored = await restore(r, point);
      expect(restored.map((b, i) => b.equals(images[i]!))).toEqual([true, true]);
      await r.close();
      const again = (await (await open('gen-same')).open('vm1'))!;
      expect((await restore(again, point)).map((b, i) => b.equals(images[i]!))).toEqual([true, true]);
      await again.close();
    });

    it('another layout: the replica holding points is retired beside the new one, its points listed and restoring its own bytes', async () => {
      const s = await open('gen-other');
      const r = await s.create('vm1', 'g1', DISKS);
      const { images, point } = await firstGeneration(r);
      await r.reset('g2', OTHER);
      expect(r.info()).toMatchObject({ generation: 'g2', disks: OTHER, appliedLsn: 0 });
      expect(r.retired()).toEqual([{ generation: 'g1', disks: DISKS, points: 1 }]);
      for (const [i, d] of OTHER.entries())
        expect((await r.read(i, 0, d.size)).equals(Buffer.alloc(d.size))).toBe(true);
      // The new replica takes records and points of its own.
      const g2 = [write(1, 1, 0, pattern(64 * 1024, 4))];
      await applyProtected(r, 'g2', g2);
      await r.savePosition({ appliedLsn: 1, initialSync: { state: 'done', done: 1, total: 1 } });
      const p2 = await r.points.cut({ lsn: 1, generation: 'g2', kind: 'crash', time: new Date() });
      expect(r.points.newest()?.id).toBe(p2.id);
      expect(r.points.list().map((p) => [p.id, p.generation, p.retired ?? false])).toEqual([
        [point, 'g1', true],
        [p2.id, 'g2', false],
      ]);
      const old = await restore(r, point);
      expect(old.map((b) => b.length)).toEqual(DISKS.map((d) => d.size));
      expect(old.map((b, i) => b.equals(images[i]!))).toEqual([true, true]);
      expect((await restore(r, p2.id)).map((b, i) => b.equals(model(OTHER, g2)[i]!))).toEqual([true, true]);
      await r.close();

      const again = (await (await open('gen-other')).open('vm1'))!;
      expect(again.retired()).toEqual([{ generation: 'g1', disks: DISKS, points: 1 }]);
      expect((await restore(again, point)).map((b, i) => b.equals(images[i]!))).toEqual([true, true]);
      // Retention takes the retired replica's last point: the replica goes, the id is remembered as pruned.
      expect(await again.points.remove([point], true)).toBe(true);
      expect(again.retired()).toEqual([]);
      expect(again.points.isPruned(point)).toBe(true);
      expect(again.points.list().map((p) => p.id)).toEqual([p2.id]);
      await again.close();
      const third = (await (await open('gen-other')).open('vm1'))!;
      expect(third.retired()).toEqual([]);
      expect(third.points.isPruned(point)).toBe(true);
      await third.close();
    });

    it('a layout flood: a replica without points is not retired, so only point-holding replicas pile up', async () => {
      const s = await open('gen-flood');
      const r = await s.create('vm1', 'g1', DISKS);
      await firstGeneration(r);
      await r.reset('g2', OTHER);
      // No point on g2's replica: g3 and g4 replace its disks rather than keep them.
      await r.reset('g3', DISKS);
      await r.reset('g4', [{ id: 'os', size: MiB }]);
      expect(r.retired()).toEqual([{ generation: 'g1', disks: DISKS, points: 1 }]);
      expect(r.info()).toMatchObject({ generation: 'g4', disks: [{ id: 'os', size: MiB }] });
      await r.close();
    });
  });
}
