import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { RecordKind, isSrError, type DiskInfo } from '@site-recovery/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileReplicaStore } from '../../src/replica/file-replica-store.js';
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
});
