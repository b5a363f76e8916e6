import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FileJournal } from '../../src/journal/file-journal.js';
import { lsnWrite } from './lsn-write.js';

const root = await fs.mkdtemp(path.join(os.tmpdir(), 'sr-cursor-'));
afterAll(() => fs.rm(root, { recursive: true, force: true }));

const sizeOf = (lsn: number): number => 512 + ((lsn * 7919) % 9000);

/** Reads `count` records from the cursor, copying each payload before the next call (the cursor reuses its memory). */
async function readAll(
  j: FileJournal,
  from: number,
  count: number,
  maxBytes: number,
): Promise<{ lsn: number; offset: number; data: Buffer }[]> {
  const cursor = j.cursor(from);
  const out: { lsn: number; offset: number; data: Buffer }[] = [];
  while (out.length < count) {
    const batch = await cursor.next(maxBytes);
    for (const r of batch) out.push({ lsn: r.lsn, offset: r.offset, data: Buffer.from(r.data!) });
  }
  cursor.close();
  return out;
}

describe('FileJournalCursor', () => {
  it.each([
    ['through the page cache', Infinity],
    ['with records of 5000 bytes and more written direct, between pads', 5000],
  ])(
    'reads every record once, in order, from any LSN and across segment rolls, with its own payload, %s',
    async (_, directWriteMinBytes) => {
      const j = await FileJournal.open(path.join(root, `order-${directWriteMinBytes}`), {
        segmentBytes: 16 * 1024,
        directWriteMinBytes,
      });
      for (let lsn = 1; lsn <= 120; lsn++) await j.append(lsnWrite(lsn, sizeOf(lsn)));
      expect(j.segmentList().length).toBeGreaterThan(10);
      for (const [from, maxBytes] of [
        [1, 64 * 1024],
        [37, 5000],
        [100, 1],
      ] as const) {
        const got = await readAll(j, from, 121 - from, maxBytes);
        expect(got.map((r) => r.lsn)).toEqual(Array.from({ length: 121 - from }, (_, i) => from + i));
        for (const r of got) {
          expect(r.offset).toBe(r.lsn * 4096);
          expect(r.data.equals(Buffer.alloc(sizeOf(r.lsn), r.lsn & 0xff)), `payload of LSN ${r.lsn}`).toBe(true);
        }
      }
      await j.close();
    },
  );

  it('reads large batches from the files past the page cache, with exact bytes at unaligned offsets', async () => {
    // The in-memory tail is off, so every read goes to the files; batches of 1 MiB take the O_DIRECT path.
    const big = (lsn: number): number => 4096 + ((lsn * 104729) % (300 * 1024)) + (lsn % 7);
    const j = await FileJournal.open(path.join(root, 'direct-reads'), {
      segmentBytes: 4 << 20,
      tailCacheBytes: 0,
      directWriteMinBytes: 200 * 1024,
    });
    for (let lsn = 1; lsn <= 60; lsn++) await j.append(lsnWrite(lsn, big(lsn)));
    expect(j.segmentList().length).toBeGreaterThan(2);
    for (const from of [1, 2, 29]) {
      const cursor = j.cursor(from);
      let expectLsn = from;
      while (expectLsn <= 60) {
        for (const r of await cursor.next(1 << 20)) {
          expect(r.lsn).toBe(expectLsn++);
          expect(r.data!.equals(Buffer.alloc(big(r.lsn), r.lsn & 0xff)), `payload of LSN ${r.lsn}`).toBe(true);
        }
      }
      cursor.close();
    }
    await j.close();
  });

  it('follows the journal as it grows, and a record larger than maxBytes comes whole', async () => {
    const j = await FileJournal.open(path.join(root, 'tail'));
    await j.append(lsnWrite(1, 4096));
    const cursor = j.cursor(1);
    expect((await cursor.next(1 << 20)).map((r) => r.lsn)).toEqual([1]);
    const pending = cursor.next(1024);
    await j.append(lsnWrite(2, 200_000));
    const [big] = await pending;
    expect(big).toMatchObject({ lsn: 2, length: 200_000 });
    expect(big!.data!.equals(Buffer.alloc(200_000, 2))).toBe(true);
    const waiting = cursor.next(1024);
    cursor.close();
    expect(await waiting).toEqual([]);
    await j.close();
  });
});
