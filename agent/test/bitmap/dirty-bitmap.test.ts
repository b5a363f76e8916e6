import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createLogger } from '@site-recovery/shared';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PAGE_BYTES, CHUNKS_PER_PAGE } from '../../src/bitmap/bitmap-format.js';
import { cleanParts, loadDirtyBitmap } from '../../src/bitmap/bitmap-load.js';
import { DirtyBitmap } from '../../src/bitmap/dirty-bitmap.js';
import { bitmapFile, bitmapModeFile } from '../../src/names.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const CHUNK = 64 * KiB;
/** Two disks, the second with a short last chunk, and enough chunks for a second page of bits. */
const DISKS = [CHUNKS_PER_PAGE * CHUNK + 3 * MiB, 5 * MiB + 512];
const log = createLogger('bitmap-test', 'silent');
const GEOMETRY = { generation: 'g1', chunkBytes: CHUNK, disks: DISKS };

describe('dirty bitmap', () => {
  let dir: string;
  const open: DirtyBitmap[] = [];
  beforeEach(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'sr-bitmap-'));
  });
  afterEach(async () => {
    for (const b of open.splice(0)) await b.close().catch(() => undefined);
    await fsp.rm(dir, { recursive: true, force: true });
  });

  async function openBitmap(loaded?: Awaited<ReturnType<typeof loadDirtyBitmap>>): Promise<DirtyBitmap> {
    const b = await DirtyBitmap.open(dir, GEOMETRY, loaded);
    open.push(b);
    return b;
  }

  const flag = { generation: 'g1', since: '2026-01-01T00:00:00.000Z', startLsn: 7 };

  it('persists marks before it answers, and a reload finds exactly them', async () => {
    const b = await openBitmap();
    b.activate(flag);
    // Disk 0's second page of bits, and disk 1's short last chunk.
    const marks = [
      [0, 0, 4 * KiB],
      [0, CHUNKS_PER_PAGE * CHUNK + 100, 200 * KiB],
      [1, 5 * MiB, 512],
    ] as const;
    for (const [d, o, l] of marks) await b.mark(d, o, l);
    // What a crash right now would leave: the file as it stands, without a close.
    const loaded = await loadDirtyBitmap(dir, DISKS, CHUNK, log);
    expect(loaded?.flag).toEqual(flag);
    expect(loaded?.untrusted).toBeUndefined();
    const again = await openBitmap(loaded);
    // 1 + 4 chunks (100 B in, 200 KiB long) on disk 0, and the 512 B last chunk of disk 1.
    expect(again.dirtyChunks).toBe(6);
    expect(again.dirtyBytes).toBe(5 * CHUNK + 512);
    const dirty: number[] = [];
    for (let c = again.nextDirty(0); c !== undefined; c = again.nextDirty(c + 1)) dirty.push(c);
    const base1 = Math.ceil(DISKS[0]! / CHUNK);
    expect(dirty).toEqual([
      0,
      CHUNKS_PER_PAGE,
      CHUNKS_PER_PAGE + 1,
      CHUNKS_PER_PAGE + 2,
      CHUNKS_PER_PAGE + 3,
      base1 + 80,
    ]);
    expect(again.locate(base1 + 80)).toEqual({ disk: 1, offset: 5 * MiB, length: 512 });
  });

  it('shares one page write and fdatasync among the first marks made together, and a marked region costs nothing', async () => {
    const b = await openBitmap();
    b.activate(flag);
    const first = Array.from({ length: 64 }, (_, i) => b.mark(0, i * 3 * CHUNK, 4 * KiB));
    expect(first.every((p) => p !== undefined)).toBe(true);
    expect(new Set(first).size).toBe(1); // one group: one promise for all of them
    await first[0];
    expect(b.syncs).toBe(1);
    // Marked and durable: no wait, no write.
    expect(b.mark(0, 3 * CHUNK + 8 * KiB, 4 * KiB)).toBeUndefined();
    // A mark while a group is being written joins the next group, not the one under way.
    const second = b.mark(0, 1000 * CHUNK, 1)!;
    await new Promise((r) => setImmediate(r));
    const third = b.mark(0, 1001 * CHUNK, 1)!;
    expect(third).not.toBe(second);
    await Promise.all([second, third]);
    expect(b.syncs).toBe(3);
  });

  it('keeps the bit of a region marked while the resync copied it, and clears the others only when told the journal is synced', async () => {
    const b = await openBitmap();
    b.activate(flag);
    await Promise.all([b.mark(0, 0, 1), b.mark(0, CHUNK, 1), b.mark(0, 2 * CHUNK, 1)]);
    for (const c of [0, 1, 2]) b.beginCopy(c);
    await b.mark(0, CHUNK + 10, 10); // a write lands on chunk 1 while its copy runs
    expect(b.endCopy(0, true)).toBe(true);
    expect(b.endCopy(1, true)).toBe(false);
    expect(b.endCopy(2, false)).toBe(false); // the copy never reached the journal
    expect(b.dirtyChunks).toBe(2);
    // Cleared in memory, not yet in the file: a crash now resyncs chunk 0 again.
    expect(bitsOf(await loadDirtyBitmap(dir, DISKS, CHUNK, log))).toEqual([0, 1, 2]);
    await b.persistClears(b.takeClears());
    expect(bitsOf(await loadDirtyBitmap(dir, DISKS, CHUNK, log))).toEqual([1, 2]);
  });

  it('removes its mode flag only once no region is dirty', async () => {
    const b = await openBitmap();
    b.activate(flag);
    await b.mark(0, 0, 1);
    await b.deactivate();
    expect(await exists(bitmapModeFile(dir))).toBe(true);
    b.beginCopy(0);
    b.endCopy(0, true);
    await b.persistClears(b.takeClears());
    await b.deactivate();
    expect(await exists(bitmapModeFile(dir))).toBe(false);
    expect(await loadDirtyBitmap(dir, DISKS, CHUNK, log)).toMatchObject({ flag: undefined });
  });

  it('distrusts a damaged bitmap while bitmap mode is on: every region of every disk is dirty', async () => {
    const b = await openBitmap();
    b.activate(flag);
    await b.mark(0, 0, 1);
    await b.close();
    open.length = 0;
    const file = await fsp.readFile(bitmapFile(dir));
    file[PAGE_BYTES + 100]! ^= 0x10; // one bit of the first page of bits
    await fsp.writeFile(bitmapFile(dir), file);
    const loaded = await loadDirtyBitmap(dir, DISKS, CHUNK, log);
    expect(loaded?.untrusted).toMatch(/page 0 fails its checksum/);
    const reopened = await openBitmap(loaded);
    expect(reopened.dirtyBytes).toBe(DISKS[0]! + DISKS[1]!);
    expect(reopened.untrusted).toBe(loaded?.untrusted);
    // The new file holds every bit, so a second restart still distrusts nothing and loses nothing.
    const second = await loadDirtyBitmap(dir, DISKS, CHUNK, log);
    expect(second?.untrusted).toBeUndefined();
    expect(await openBitmap(second).then((x) => x.dirtyBytes)).toBe(DISKS[0]! + DISKS[1]!);
  });

  it('distrusts the mode flag without its bitmap, and ignores a damaged bitmap without the flag', async () => {
    const b = await openBitmap();
    b.activate(flag);
    await b.mark(1, 0, 1);
    await b.close();
    open.length = 0;
    await fsp.rm(bitmapFile(dir));
    const missing = await loadDirtyBitmap(dir, DISKS, CHUNK, log);
    expect(missing?.untrusted).toMatch(/missing while bitmap mode was on/);
    expect(bitsOf(missing).length).toBe(Math.ceil(DISKS[0]! / CHUNK) + Math.ceil(DISKS[1]! / CHUNK));

    await fsp.rm(bitmapModeFile(dir));
    await fsp.writeFile(bitmapFile(dir), 'not a bitmap');
    expect(await loadDirtyBitmap(dir, DISKS, CHUNK, log)).toBeUndefined();
  });

  it('starts empty for another generation, and redo leaves out only the dirty parts of a record', async () => {
    const b = await openBitmap();
    b.activate(flag);
    await b.mark(0, CHUNK, 1);
    const loaded = (await loadDirtyBitmap(dir, DISKS, CHUNK, log))!;
    expect(cleanParts(loaded, 0, CHUNK / 2, 3 * CHUNK)).toEqual([
      [CHUNK / 2, CHUNK / 2],
      [2 * CHUNK, CHUNK + CHUNK / 2],
    ]);
    expect(cleanParts(loaded, 1, CHUNK, CHUNK)).toEqual([[CHUNK, CHUNK]]);
    const other = await DirtyBitmap.open(dir, { ...GEOMETRY, generation: 'g2' }, loaded);
    open.push(other);
    expect(other.dirtyChunks).toBe(0);
    expect(await exists(bitmapModeFile(dir))).toBe(false);
  });
});

function bitsOf(b: Awaited<ReturnType<typeof loadDirtyBitmap>>): number[] {
  const out: number[] = [];
  if (b === undefined) return out;
  for (let c = 0; c < b.bits.length * 8; c++) if ((b.bits[c >> 3]! & (1 << (c & 7))) !== 0) out.push(c);
  return out;
}

async function exists(file: string): Promise<boolean> {
  return fsp.stat(file).then(
    () => true,
    () => false,
  );
}
