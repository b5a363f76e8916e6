import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { ChangeRecord } from '@site-recovery/shared';
import { afterAll, describe, expect, it } from 'vitest';
import { FileJournal } from '../../src/journal/file-journal.js';
import { JournalTail } from '../../src/journal/tail.js';
import { segmentFileName } from '../../src/names.js';
import { lsnWrite } from './lsn-write.js';

const bytes = (from: number, n: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (from + i) & 0xff));

const read = (t: JournalTail, file: string, pos: number, n: number): Buffer | undefined => {
  const into = Buffer.alloc(n);
  return t.read(file, pos, into) ? into : undefined;
};

describe('JournalTail', () => {
  it('holds the last capacity bytes written contiguously, across the ring wrap', () => {
    const t = new JournalTail(10);
    t.wrote('a', 100, [bytes(100, 4), bytes(104, 3)]);
    expect(read(t, 'a', 100, 7)).toEqual(bytes(100, 7));
    t.wrote('a', 107, [bytes(107, 6)]); // 13 bytes written: 100..102 fall out, the rest wraps
    expect(read(t, 'a', 103, 10)).toEqual(bytes(103, 10));
    expect(read(t, 'a', 102, 2)).toBeUndefined(); // evicted
    expect(read(t, 'a', 110, 4)).toBeUndefined(); // past the end
  });

  it('keeps only the end of a write longer than itself', () => {
    const t = new JournalTail(8);
    t.wrote('a', 0, [bytes(0, 20)]);
    expect(read(t, 'a', 12, 8)).toEqual(bytes(12, 8));
    expect(read(t, 'a', 11, 1)).toBeUndefined();
  });

  it('starts afresh on another file or a write that does not follow on, and after clear', () => {
    const t = new JournalTail(16);
    t.wrote('a', 0, [bytes(0, 8)]);
    t.wrote('b', 32, [bytes(32, 4)]);
    expect(read(t, 'a', 0, 4)).toBeUndefined();
    expect(read(t, 'b', 32, 4)).toEqual(bytes(32, 4));
    t.wrote('b', 40, [bytes(40, 4)]); // a gap at 36..40
    expect(read(t, 'b', 32, 4)).toBeUndefined();
    expect(read(t, 'b', 40, 4)).toEqual(bytes(40, 4));
    t.clear();
    expect(read(t, 'b', 40, 4)).toBeUndefined();
  });

  it('with capacity 0 holds nothing', () => {
    const t = new JournalTail(0);
    t.wrote('a', 0, [bytes(0, 8)]);
    expect(read(t, 'a', 0, 1)).toBeUndefined();
  });
});

describe('FileJournal cursor reading from the tail', () => {
  const root = fs.mkdtemp(path.join(os.tmpdir(), 'sr-tail-'));
  afterAll(async () => fs.rm(await root, { recursive: true, force: true }));

  it('serves the newest records from memory and older ones from the file', async () => {
    const dir = path.join(await root, 'j');
    const j = await FileJournal.open(dir, { tailCacheBytes: 1 << 20 });
    const shipper = j.cursor(1); // the tail is kept while a cursor is open, as the shipper's is
    const recs = [lsnWrite(1, 4096), lsnWrite(2, 512 * 1024), lsnWrite(3, 512 * 1024), lsnWrite(4, 300 * 1024)];
    for (const r of recs) await j.append(r);
    // Scribble over the last 700 KiB of the file (the end of record 3 and all of record 4) under the
    // journal: the cursor must return them intact from memory, and the evicted first record from the file.
    const file = path.join(dir, segmentFileName(1));
    const size = (await fs.stat(file)).size;
    const fh = await fs.open(file, 'r+');
    await fh.write(Buffer.alloc(700 * 1024, 0xee), 0, 700 * 1024, size - 700 * 1024);
    await fh.close();
    const cursor = j.cursor(3);
    const got: ChangeRecord[] = [];
    while (got.length < 2) for (const r of await cursor.next(4 << 20)) got.push({ ...r, data: Buffer.from(r.data!) });
    cursor.close();
    expect(got.map((r) => r.lsn)).toEqual([3, 4]);
    expect(got[0]!.data!.equals(recs[2]!.data!)).toBe(true);
    expect(got[1]!.data!.equals(recs[3]!.data!)).toBe(true);
    const early = j.cursor(1);
    const first = await early.next(1);
    early.close();
    expect(first[0]!.lsn).toBe(1);
    expect(first[0]!.data!.equals(recs[0]!.data!)).toBe(true); // outside the scribbled range, from the file
    shipper.close();
    await j.close();
  });
});
