import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { isSrError } from '@site-recovery/shared';
import { afterAll, describe, expect, it } from 'vitest';
import { FileStreamStore } from '../../src/log/file-stream-store.js';
import { metaFile, segmentFileName, vmDir } from '../../src/names.js';
import { FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES } from '../../src/log/segment-format.js';
import { writeVmMeta } from '../../src/log/vm-meta.js';
import { appendN, readAll, streamStoreContract } from './stream-log-contract.js';

const root = await fs.mkdtemp(path.join(os.tmpdir(), 'sr-cache-store-'));
afterAll(() => fs.rm(root, { recursive: true, force: true }));

streamStoreContract('FileStreamStore', (key) => FileStreamStore.open(path.join(root, 'contract', key)));
streamStoreContract('FileStreamStore with tiny segments', (key) =>
  FileStreamStore.open(path.join(root, 'tiny', key), { segmentBytes: 4096 }),
);

const DISKS = [{ id: 'os', size: 1 << 30 }];
const FRAME = 1000;
const FRAME_BYTES = FRAME_HEADER_BYTES + FRAME;

async function segmentsOf(dataDir: string, vm = 'vm1'): Promise<string[]> {
  return (await fs.readdir(vmDir(dataDir, vm))).filter((n) => n.endsWith('.srs')).sort();
}

/** Inverts `count` bytes of `file` at `at`; writing a fixed value over random frame bytes could leave them unchanged. */
async function flipBytes(file: string, at: number, count = 1): Promise<void> {
  const fh = await fs.open(file, 'r+');
  const b = Buffer.alloc(count);
  await fh.read(b, 0, count, at);
  for (let i = 0; i < count; i++) b[i] = b[i]! ^ 0xff;
  await fh.write(b, 0, count, at);
  await fh.close();
}

/** A store with `n` frames of 3 records (1000 bytes each) for vm1, closed again. */
async function filled(dataDir: string, n: number, segmentBytes?: number): Promise<void> {
  const store = await FileStreamStore.open(dataDir, segmentBytes === undefined ? {} : { segmentBytes });
  const log = await store.openGeneration('vm1', 'g1', DISKS);
  // One frame per sync: segments roll between writes, so this spreads frames over segments.
  for (let i = 0; i < n; i++) {
    appendN(log, 1, 3, FRAME);
    await log.sync();
  }
  await store.close();
}

describe('FileStreamStore on disk', () => {
  it('lays a VM out as vms/<vm>/meta.json and segments named by first LSN', async () => {
    const dir = path.join(root, 'layout');
    await filled(dir, 10, 4096);
    const segs = await segmentsOf(dir);
    expect(segs[0]).toBe(segmentFileName(1));
    expect(segs.length).toBeGreaterThan(2);
    const meta = JSON.parse(await fs.readFile(metaFile(vmDir(dir, 'vm1')), 'utf8')) as Record<string, unknown>;
    expect(meta).toMatchObject({ version: 1, vm: 'vm1', generation: 'g1', disks: DISKS, appliedLsn: 0 });
  });

  it('cuts a torn tail off the newest segment and keeps the whole frames before it', async () => {
    const dir = path.join(root, 'torn');
    await filled(dir, 5);
    const seg = path.join(vmDir(dir, 'vm1'), segmentFileName(1));
    const size = (await fs.stat(seg)).size;
    expect(size).toBe(SEGMENT_HEADER_BYTES + 5 * FRAME_BYTES);
    await fs.truncate(seg, size - 100); // the last frame loses its last 100 bytes
    const store = await FileStreamStore.open(dir);
    const log = store.get('vm1')!;
    expect([log.durableLsn, log.appendedLsn]).toEqual([12, 12]);
    expect((await fs.stat(seg)).size).toBe(SEGMENT_HEADER_BYTES + 4 * FRAME_BYTES);
    appendN(log, 1, 3, FRAME);
    expect(await log.sync()).toBe(15);
    expect((await readAll(log)).map((f) => f.first)).toEqual([1, 4, 7, 10, 13]);
    await store.close();
  });

  it('drops a newest frame whose checksum does not match (torn write)', async () => {
    const dir = path.join(root, 'flip-tail');
    await filled(dir, 3);
    const seg = path.join(vmDir(dir, 'vm1'), segmentFileName(1));
    await flipBytes(seg, SEGMENT_HEADER_BYTES + 2 * FRAME_BYTES + FRAME_HEADER_BYTES + 10);
    const store = await FileStreamStore.open(dir);
    expect(store.get('vm1')!.durableLsn).toBe(6);
    await store.close();
  });

  /** Opens the store; the VM must be set aside as damaged, with an error matching `what`, and its generation refused. */
  async function expectSetAside(
    dir: string,
    what: string | RegExp,
    generation: string | undefined,
  ): Promise<FileStreamStore> {
    const store = await FileStreamStore.open(dir);
    expect(store.get('vm1')).toBeUndefined();
    expect(store.logs()).toHaveLength(0);
    const [d] = store.damaged();
    expect(d).toMatchObject({ vm: 'vm1', ...(generation !== undefined ? { generation } : {}) });
    expect(d!.error).toMatch(what);
    const err = await store.openGeneration('vm1', 'g1', DISKS).catch((e: unknown) => e);
    expect(isSrError(err, 'SR_JOURNAL_CORRUPT')).toBe(true);
    return store;
  }

  it('sets aside a VM whose older segment is damaged, naming the file, until a new generation replaces it', async () => {
    const dir = path.join(root, 'flip-old');
    await filled(dir, 20, 4096);
    const segs = await segmentsOf(dir);
    expect(segs.length).toBeGreaterThan(2);
    await flipBytes(path.join(vmDir(dir, 'vm1'), segs[1]!), SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + 5, 2);
    const store = await expectSetAside(dir, segs[1]!, 'g1');
    expect((await store.openGeneration('vm1', 'g2', DISKS)).generation).toBe('g2');
    expect(store.damaged()).toEqual([]);
    await store.close();
    // The new generation is what opens from now on.
    const reopened = await FileStreamStore.open(dir);
    expect(reopened.get('vm1')?.generation).toBe('g2');
    expect(reopened.damaged()).toEqual([]);
    await reopened.close();
  });

  it('sets aside a VM when records between the applied LSN and the first segment are missing', async () => {
    const dir = path.join(root, 'missing');
    await filled(dir, 20, 4096);
    const segs = await segmentsOf(dir);
    await fs.unlink(path.join(vmDir(dir, 'vm1'), segs[0]!));
    await (await expectSetAside(dir, /missing/, 'g1')).close();
  });

  it('rolls segments by size, reads across them, and release deletes the wholly applied ones but never the newest', async () => {
    const dir = path.join(root, 'release');
    await filled(dir, 30, 4096); // 4 frames per segment
    const store = await FileStreamStore.open(dir, { segmentBytes: 4096 });
    const log = store.get('vm1')!;
    const before = log.stats().segments;
    expect(before).toBeGreaterThan(6);
    expect((await readAll(log)).length).toBe(30);
    await log.release(40);
    const after = (await segmentsOf(dir)).length;
    expect(after).toBeLessThan(before);
    expect(log.stats().segments).toBe(after);
    expect(log.firstLsn).toBeLessThanOrEqual(41);
    expect(log.firstLsn).toBeGreaterThan(1);
    expect((await readAll(log, 41)).map((f) => f.first)[0]).toBeLessThanOrEqual(41);
    const err = await readAll(log, 1).catch((e: unknown) => e);
    expect(isSrError(err, 'SR_SEQUENCE')).toBe(true);
    await log.release(90); // everything: the newest segment stays
    expect((await segmentsOf(dir)).length).toBe(1);
    expect(log.stats().segments).toBe(1);
    appendN(log, 1, 3, FRAME);
    expect(await log.sync()).toBe(93);
    await store.close();
    const again = await FileStreamStore.open(dir, { segmentBytes: 4096 });
    expect([again.get('vm1')!.appliedLsn, again.get('vm1')!.durableLsn]).toEqual([90, 93]);
    await again.close();
  });

  it('deletes segments of a replaced generation left by a crash between the meta write and the deletion', async () => {
    const dir = path.join(root, 'leftover');
    await filled(dir, 12, 4096);
    await writeVmMeta(metaFile(vmDir(dir, 'vm1')), {
      version: 1,
      vm: 'vm1',
      generation: 'g2',
      disks: DISKS,
      appliedLsn: 0,
    });
    const store = await FileStreamStore.open(dir);
    const log = store.get('vm1')!;
    expect([log.generation, log.durableLsn, log.firstLsn]).toEqual(['g2', 0, 1]);
    expect(await segmentsOf(dir)).toEqual([segmentFileName(1)]);
    await store.close();
  });

  it('removes a half-created newest segment (crash during a roll) and continues', async () => {
    const dir = path.join(root, 'half');
    await filled(dir, 4);
    await fs.writeFile(path.join(vmDir(dir, 'vm1'), segmentFileName(13)), Buffer.from('SRCSEG'));
    const store = await FileStreamStore.open(dir);
    const log = store.get('vm1')!;
    expect(log.durableLsn).toBe(12);
    expect(await segmentsOf(dir)).toEqual([segmentFileName(1)]);
    appendN(log, 1);
    expect(await log.sync()).toBe(15);
    await store.close();
  });

  it('sets aside a VM whose meta file is damaged, naming it, and refuses every generation (it cannot tell them apart)', async () => {
    const dir = path.join(root, 'bad-meta');
    await filled(dir, 1);
    await fs.writeFile(metaFile(vmDir(dir, 'vm1')), '{"version":1,"vm":"vm1","generation":"../x"');
    const store = await expectSetAside(dir, 'meta.json', undefined);
    expect(store.damaged()[0]!.generation).toBeUndefined();
    const err = await store.openGeneration('vm1', 'g2', DISKS).catch((e: unknown) => e);
    expect(isSrError(err, 'SR_JOURNAL_CORRUPT')).toBe(true);
    expect((err as Error).message).toContain('move');
    await store.close();
  });
});
