import { randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Sums } from '@site-recovery/shared';
import { tempDir } from '@site-recovery/test';
import { ReplicaSums } from '../../src/replication/replica-sums.js';

const BLOCK = 4096;
/** Disk 0: 10 blocks, the last one short; disk 1: 4 blocks. */
const DISKS = [{ size: 9 * BLOCK + 100 }, { size: 4 * BLOCK }];

function sums(disk: number, first: number, bytes: Buffer, blockBytes = BLOCK): Sums {
  return { t: 'sums', vm: 'vm1', generation: 'g2', disk, first, blockBytes, sums: bytes };
}

describe('ReplicaSums (one answer, kept in a file)', () => {
  let t: { dir: string; cleanup: () => Promise<void> };
  let store: ReplicaSums | undefined;
  beforeEach(async () => {
    t = await tempDir('replicasums');
  });
  afterEach(async () => {
    await store?.close(true);
    store = undefined;
    await t.cleanup();
  });

  const open = async (maxPendingBytes?: number): Promise<ReplicaSums> =>
    (store = await ReplicaSums.open(path.join(t.dir, 'sums.bin'), DISKS, BLOCK, maxPendingBytes));

  it('takes each disk in block order, disks in any order, and reads back exactly what came', async () => {
    const s = await open();
    const d0 = randomBytes(10 * 16);
    const d1 = randomBytes(4 * 16);
    void s.take(sums(1, 0, d1));
    void s.take(sums(0, 0, d0.subarray(0, 48)));
    expect(s.has(0, 3)).toBe(true);
    expect(s.has(0, 4)).toBe(false);
    expect(s.complete).toBe(false);
    void s.take(sums(0, 3, d0.subarray(48)));
    expect(s.complete).toBe(true);
    expect(s.receivedBlocks).toBe(14);
    await s.flushed();
    expect(await s.read(0, 2, 8)).toEqual(d0.subarray(32));
    expect(await s.read(1, 0, 4)).toEqual(d1);
  });

  it('keeps the blocks before a gap, and a restart of the disk at block 0 clears it', async () => {
    const s = await open();
    void s.take(sums(0, 0, randomBytes(32)));
    void s.take(sums(0, 5, randomBytes(32))); // blocks 2..4 never came
    expect(s.problem).toBe('sums of disk 0 from block 5, expected block 2');
    expect(s.has(0, 2)).toBe(true);
    void s.take(sums(0, 2, randomBytes(16))); // too late: the disk is broken until it restarts
    expect(s.has(0, 3)).toBe(false);
    const d0 = randomBytes(160);
    void s.take(sums(0, 0, d0));
    void s.take(sums(1, 0, randomBytes(64)));
    expect(s.problem).toBeUndefined();
    expect(s.complete).toBe(true);
    await s.flushed();
    expect(await s.read(0, 0, 10)).toEqual(d0);
  });

  it('refuses sums past a disk, of a disk the VM lacks, or of another block size; reset forgets it all', async () => {
    const s = await open();
    void s.take(sums(1, 2, randomBytes(48)));
    expect(s.problem).toBe('sums of disk 1 from block 2, expected block 0');
    void s.take(sums(1, 0, randomBytes(80)));
    expect(s.problem).toBe('sums of disk 1 past its last block (3)');
    void s.take(sums(2, 0, randomBytes(16)));
    expect(s.problem).toBe('sums of disk 2, the VM has 2');
    s.reset();
    expect(s.problem).toBeUndefined();
    void s.take(sums(0, 0, randomBytes(16), 8192));
    expect(s.problem).toBe('sums of 8192-byte blocks, asked for 4096');
    void s.take(sums(0, 0, randomBytes(16))); // a global problem: no restart clears it
    expect(s.receivedBlocks).toBe(0);
    s.reset();
    void s.take(sums(0, 0, randomBytes(17)));
    expect(s.problem).toBe('a sums message of 17 bytes, not a whole number of 16-byte sums');
  });

  it('asks its caller to wait while too much is still to be written', async () => {
    const s = await open(64);
    expect(s.take(sums(0, 0, randomBytes(64)))).toBeUndefined();
    const wait = s.take(sums(0, 4, randomBytes(96)));
    expect(wait).toBeInstanceOf(Promise);
    await wait;
    await s.flushed();
    expect((await fsp.stat(path.join(t.dir, 'sums.bin'))).size).toBe(160);
  });
});
