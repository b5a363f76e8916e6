import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { RecordKind, isSrError, type DiskInfo } from '@site-recovery/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileReplicaStore } from '../../src/replica/file-replica-store.js';
import type { SwitchStep } from '../../src/replica/layout-switch.js';
import type { Replica } from '../../src/replica/replica-store.js';
import {
  applyProtected,
  firstGeneration,
  pattern,
  replicaGenerationsContract,
  write,
  zero,
} from './generations-contract.js';
import { replicaStoreContract } from './replica-store-contract.js';

const MiB = 1 << 20;
let root: string;

beforeAll(async () => {
  root = await fsp.mkdtemp(path.join(os.tmpdir(), 'sr-replica-store-'));
});
afterAll(async () => {
  await fsp.rm(root, { recursive: true, force: true });
});

replicaStoreContract('FileReplicaStore', (key) => Promise.resolve(new FileReplicaStore(path.join(root, key))));
// The same contract with every write through the thread pool, so both paths of the one write path run.
replicaStoreContract('FileReplicaStore (no inline writes)', (key) =>
  Promise.resolve(new FileReplicaStore(path.join(root, `noinline-${key}`), { inlineWriteMaxBytes: 0 })),
);

replicaGenerationsContract('FileReplicaStore', (key) => Promise.resolve(new FileReplicaStore(path.join(root, key))));

const DISKS: DiskInfo[] = [
  { id: 'os', size: 64 * MiB },
  { id: 'data', size: 16 * MiB },
];

/** Bytes allocated on disk (st_blocks is in 512-byte units whatever the block size). */
function allocated(file: string): number {
  return fs.statSync(file).blocks * 512;
}

async function codeOf(p: () => Promise<unknown>): Promise<string | undefined> {
  try {
    await p();
  } catch (err) {
    return isSrError(err) ? err.code : String(err);
  }
  return undefined;
}

describe('FileReplicaStore on disk', () => {
  it('lays out <data-dir>/replicas/<vm>/state.json and one sparse image per disk of the source size', async () => {
    const dataDir = path.join(root, 'layout');
    const r = await new FileReplicaStore(dataDir).create('web01', 'gen-1', DISKS);
    const dir = path.join(dataDir, 'replicas', 'web01');
    const state = JSON.parse(await fsp.readFile(path.join(dir, 'state.json'), 'utf8')) as Record<string, unknown>;
    expect(state).toMatchObject({
      version: 1,
      vm: 'web01',
      generation: 'gen-1',
      disks: DISKS,
      appliedLsn: 0,
      initialSync: { state: 'copying' },
    });
    for (const [i, d] of DISKS.entries()) {
      const file = path.join(dir, 'disks', `${d.id}.img`);
      expect(r.locate(i)).toBe(file);
      expect(fs.statSync(file).size).toBe(d.size);
      expect(allocated(file)).toBe(0);
    }
    await r.close();
  });

  it('zeroing never allocates space and frees nothing it should keep', async () => {
    const dataDir = path.join(root, 'sparse');
    const r = await new FileReplicaStore(dataDir).create('vm1', 'g1', DISKS);
    const file = r.locate(0);
    await r.apply({ lsn: 1, kind: RecordKind.ZERO, disk: 0, offset: 0, length: DISKS[0]!.size });
    await r.apply({ lsn: 2, kind: RecordKind.TRIM, disk: 0, offset: 4096, length: 8192 });
    expect(allocated(file)).toBe(0);
    const data = Buffer.alloc(MiB, 0xab);
    await r.apply({ lsn: 3, kind: RecordKind.WRITE, disk: 0, offset: 8 * MiB, length: MiB, data });
    const afterWrite = allocated(file);
    expect(afterWrite).toBeGreaterThanOrEqual(MiB);
    // Zero a range that covers the data and a lot of never-written space around it.
    await r.apply({ lsn: 4, kind: RecordKind.ZERO, disk: 0, offset: 4 * MiB, length: 16 * MiB });
    expect(allocated(file)).toBeLessThanOrEqual(afterWrite);
    expect((await r.read(0, 4 * MiB, 16 * MiB)).equals(Buffer.alloc(16 * MiB))).toBe(true);
    await r.close();
  });

  it('refuses an unreadable or invalid state file with SR_STATE_MISMATCH', async () => {
    const dataDir = path.join(root, 'corrupt');
    const store = new FileReplicaStore(dataDir);
    await (await store.create('vm1', 'g1', DISKS)).close();
    const file = path.join(dataDir, 'replicas', 'vm1', 'state.json');
    await fsp.writeFile(file, '{"version":1,"vm":"vm1"');
    expect(await codeOf(() => store.open('vm1'))).toBe('SR_STATE_MISMATCH');
    await fsp.writeFile(
      file,
      JSON.stringify({
        version: 1,
        vm: 'vm1',
        generation: 'g1',
        disks: DISKS,
        appliedLsn: -3,
        initialSync: { state: 'done', done: 0, total: 0 },
      }),
    );
    expect(await codeOf(() => store.open('vm1'))).toBe('SR_STATE_MISMATCH');
    await fsp.writeFile(
      file,
      JSON.stringify({
        version: 1,
        vm: 'other',
        generation: 'g1',
        disks: DISKS,
        appliedLsn: 0,
        initialSync: { state: 'done', done: 0, total: 0 },
      }),
    );
    expect(await codeOf(() => store.open('vm1'))).toBe('SR_STATE_MISMATCH');
  });

  it('refuses a missing or resized disk once data was applied, repairs it while there is none', async () => {
    const dataDir = path.join(root, 'missing');
    const store = new FileReplicaStore(dataDir);
    const r = await store.create('vm1', 'g1', DISKS);
    const os0 = r.locate(0);
    await r.close();
    await fsp.rm(os0);
    const repaired = (await store.open('vm1'))!;
    expect(fs.statSync(os0).size).toBe(DISKS[0]!.size);
    await repaired.savePosition({ appliedLsn: 5, initialSync: { state: 'copying', done: 0, total: 0 } });
    await repaired.close();
    await fsp.truncate(os0, MiB);
    expect(await codeOf(() => store.open('vm1'))).toBe('SR_BAD_DISK');
    await fsp.rm(os0);
    expect(await codeOf(() => store.open('vm1'))).toBe('SR_BAD_DISK');
  });

  it('removes what a crash can leave behind: state temp files and images of a replaced layout', async () => {
    const dataDir = path.join(root, 'leftovers');
    const store = new FileReplicaStore(dataDir);
    await (await store.create('vm1', 'g1', DISKS)).close();
    const dir = path.join(dataDir, 'replicas', 'vm1');
    await fsp.writeFile(path.join(dir, 'state.json.tmp-4242-7'), 'partial');
    await fsp.writeFile(path.join(dir, 'state.json.tmp-4243'), 'partial (as older versions named it)');
    await fsp.writeFile(path.join(dir, 'disks', 'old.img'), 'x');
    await fsp.writeFile(path.join(dir, 'disks', 'notes.txt'), 'kept: not an image name');
    const r = (await store.open('vm1'))!;
    expect((await fsp.readdir(dir)).sort()).toEqual(['disks', 'points', 'state.json']);
    expect((await fsp.readdir(path.join(dir, 'disks'))).sort()).toEqual(['data.img', 'notes.txt', 'os.img']);
    await r.close();
  });

  it("finishes a new generation's zeroing that a crash interrupted", async () => {
    const dataDir = path.join(root, 'wipe');
    const store = new FileReplicaStore(dataDir);
    const r = await store.create('vm1', 'g1', DISKS);
    const data = Buffer.alloc(MiB, 0x77);
    await r.apply({ lsn: 1, kind: RecordKind.WRITE, disk: 1, offset: 2 * MiB, length: MiB, data });
    await r.flush();
    await r.close();
    // As reset() leaves it when killed between persisting the new generation and zeroing the disks.
    const file = path.join(dataDir, 'replicas', 'vm1', 'state.json');
    const state = JSON.parse(await fsp.readFile(file, 'utf8')) as Record<string, unknown>;
    await fsp.writeFile(
      file,
      JSON.stringify({
        ...state,
        generation: 'g2',
        appliedLsn: 0,
        initialSync: { state: 'copying', done: 0, total: 0 },
        wipePending: true,
      }),
    );
    const again = (await store.open('vm1'))!;
    expect(again.info()).toEqual({
      vm: 'vm1',
      generation: 'g2',
      disks: DISKS,
      appliedLsn: 0,
      initialSync: { state: 'copying', done: 0, total: 0 },
    });
    expect((await again.read(1, 0, DISKS[1]!.size)).equals(Buffer.alloc(DISKS[1]!.size))).toBe(true);
    expect(JSON.parse(await fsp.readFile(file, 'utf8'))).not.toHaveProperty('wipePending');
    await again.close();
  });

  it('ignores directories that are not replicas when listing', async () => {
    const dataDir = path.join(root, 'listing');
    const store = new FileReplicaStore(dataDir);
    await (await store.create('vm1', 'g1', DISKS.slice(1))).close();
    await fsp.mkdir(path.join(dataDir, 'replicas', 'half-made'));
    await fsp.mkdir(path.join(dataDir, 'replicas', '.hidden'));
    expect(await store.list()).toEqual(['vm1']);
  });

  it('ZERO records over blocks that read as zeroes save nothing in the undo log and allocate nothing', async () => {
    const dataDir = path.join(root, 'zero-cheap');
    const r = await new FileReplicaStore(dataDir, { undoBlockSize: 64 * 1024 }).create('vm1', 'g1', DISKS);
    await applyProtected(r, 'g1', [write(1, 0, 8 * MiB, pattern(64 * 1024, 1))]);
    await r.savePosition({ appliedLsn: 1, initialSync: { state: 'done', done: 1, total: 1 } });
    const p = await r.points.cut({ lsn: 1, generation: 'g1', kind: 'crash', time: new Date() });
    const empty = r.points.newest()!.undoBytes;
    const before = allocated(r.locate(0));
    // A new generation's copy of a mostly empty disk: a ZERO record for every 1 MiB chunk, twice over.
    await r.reset('g2', DISKS);
    for (let round = 0; round < 2; round++) {
      const recs = Array.from({ length: 64 }, (_, i) => zero(round * 64 + i + 1, 0, i * MiB, MiB));
      await applyProtected(r, 'g2', recs);
    }
    // Only the one block that held data was saved (an entry header and its 64 KiB).
    expect(r.points.newest()!.undoBytes - empty).toBe(24 + 64 * 1024);
    expect(allocated(r.locate(0))).toBeLessThanOrEqual(before);
    expect((await r.read(0, 0, DISKS[0]!.size)).equals(Buffer.alloc(DISKS[0]!.size))).toBe(true);
    const plan = r.points.plan(p.id)!;
    const target = path.join(root, 'zero-cheap-os.img');
    await r.points.materialize(plan, [target, `${target}.data`]);
    expect((await fsp.readFile(target)).subarray(8 * MiB, 8 * MiB + 64 * 1024).equals(pattern(64 * 1024, 1))).toBe(
      true,
    );
    await r.close();
  });
});

/** A store whose disk-layout switch stops for good at `step`, as a crash there would leave it. */
function freezingAt(dataDir: string, step: SwitchStep): { store: FileReplicaStore; reached: Promise<void> } {
  let reached!: () => void;
  const at = new Promise<void>((resolve) => (reached = resolve));
  const store = new FileReplicaStore(dataDir, {
    onSwitchStep: (s) => {
      if (s !== step) return;
      reached();
      return new Promise<void>(() => undefined);
    },
  });
  return { store, reached: at };
}

describe('FileReplicaStore: a disk-layout switch cut short by a crash', () => {
  const OTHER: DiskInfo[] = [{ id: 'os', size: 8 * MiB }];
  const SMALL: DiskInfo[] = [
    { id: 'os', size: 4 * MiB },
    { id: 'data', size: 2 * MiB },
  ];

  it.each([
    ['staged', 'old'],
    ['retired', 'new'],
    ['swapped', 'new'],
  ] as const)('crash at %s: open finds the %s state, and the old point restores', async (step, expected) => {
    const dataDir = path.join(root, `switch-${step}`);
    const { store, reached } = freezingAt(dataDir, step);
    const r = await store.create('vm1', 'g1', SMALL);
    const { images, point } = await firstGeneration(r);
    void r.reset('g2', OTHER); // never settles: frozen at the step
    await reached;
    // What a restart finds (the frozen replica is abandoned, as a killed process's would be).
    const fresh = new FileReplicaStore(dataDir);
    expect(await fresh.list()).toEqual(['vm1']);
    const again = (await fresh.open('vm1'))!;
    if (expected === 'old') {
      expect(again.info()).toMatchObject({ generation: 'g1', disks: SMALL, appliedLsn: 3 });
      expect(again.retired()).toEqual([]);
      expect(again.points.list().map((p) => [p.id, p.retired ?? false])).toEqual([[point, false]]);
    } else {
      expect(again.info()).toMatchObject({ generation: 'g2', disks: OTHER, appliedLsn: 0 });
      expect(again.retired()).toEqual([{ generation: 'g1', disks: SMALL, points: 1 }]);
      expect(again.points.list().map((p) => [p.id, p.retired ?? false])).toEqual([[point, true]]);
    }
    const staging = path.join(dataDir, 'staging', 'vm1');
    expect(fs.existsSync(staging)).toBe(false);
    const plan = again.points.plan(point)!;
    const dir = await fsp.mkdtemp(path.join(root, `restore-${step}-`));
    const targets = plan.disks.map((d) => path.join(dir, `${d.id}.img`));
    await again.points.materialize(plan, targets);
    for (const [i, t] of targets.entries()) expect((await fsp.readFile(t)).equals(images[i]!)).toBe(true);
    // The switch goes through from either state.
    if (expected === 'old') await again.reset('g2', OTHER);
    expect(again.info().generation).toBe('g2');
    expect(again.retired()).toHaveLength(1);
    await again.close();
  });

  it('a retired replica whose removal was cut short (its state file gone) is finished off on open', async () => {
    const dataDir = path.join(root, 'retired-removal');
    const store = new FileReplicaStore(dataDir);
    const r: Replica = await store.create('vm1', 'g1', SMALL);
    await firstGeneration(r);
    await r.reset('g2', OTHER);
    await r.close();
    const retired = path.join(dataDir, 'retired', 'vm1', '1');
    expect(fs.existsSync(path.join(retired, 'state.json'))).toBe(true);
    await fsp.rm(path.join(retired, 'state.json'));
    const again = (await store.open('vm1'))!;
    expect(again.retired()).toEqual([]);
    expect(again.points.list()).toEqual([]);
    expect(fs.existsSync(retired)).toBe(false);
    await again.close();
  });
});
