import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { RecordKind, encodeGroupRecord, isSrError, type ChangeRecord } from '@site-recovery/shared';
import { afterAll, describe, expect, it } from 'vitest';
import { FileJournal } from '../../src/journal/file-journal.js';
import { RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES } from '../../src/journal/format.js';
import { segmentFileName } from '../../src/names.js';
import { journalContract } from './journal-contract.js';
import { lsnWrite } from './lsn-write.js';

const root = await fs.mkdtemp(path.join(os.tmpdir(), 'sr-journal-'));
afterAll(() => fs.rm(root, { recursive: true, force: true }));

journalContract('FileJournal', (key) => FileJournal.open(path.join(root, 'contract', key)));
journalContract('FileJournal with tiny segments', (key) =>
  FileJournal.open(path.join(root, 'tiny', key), { segmentBytes: 8192 }),
);
journalContract('FileJournal writing every group direct', (key) =>
  FileJournal.open(path.join(root, 'direct', key), { directWriteMinBytes: 1 }),
);
journalContract('FileJournal writing direct into tiny segments', (key) =>
  FileJournal.open(path.join(root, 'direct-tiny', key), { segmentBytes: 8192, directWriteMinBytes: 1 }),
);

async function filled(dir: string, n: number, segmentBytes?: number): Promise<void> {
  const j = await FileJournal.open(dir, segmentBytes === undefined ? {} : { segmentBytes });
  // One write per append: segments roll between writes, so this spreads records over segments.
  for (let i = 1; i <= n; i++) await j.append(lsnWrite(i));
  await j.close();
}

describe('FileJournal on disk', () => {
  it('truncates a torn tail of the newest segment and keeps the whole records before it', async () => {
    const dir = path.join(root, 'torn');
    await filled(dir, 5);
    const seg = path.join(dir, segmentFileName(1));
    const size = (await fs.stat(seg)).size;
    await fs.truncate(seg, size - 100); // the last record loses its final 100 bytes
    const j = await FileJournal.open(dir);
    expect(j.lastLsn).toBe(4);
    expect((await fs.stat(seg)).size).toBe(SEGMENT_HEADER_BYTES + 4 * (RECORD_HEADER_BYTES + 4096));
    await j.append(lsnWrite(5));
    await j.close();
  });

  it('drops a newest record whose checksum does not match (torn write)', async () => {
    const dir = path.join(root, 'flip-tail');
    await filled(dir, 3);
    const seg = path.join(dir, segmentFileName(1));
    const fh = await fs.open(seg, 'r+');
    const at = SEGMENT_HEADER_BYTES + 2 * (RECORD_HEADER_BYTES + 4096) + RECORD_HEADER_BYTES + 10;
    await fh.write(Buffer.from([0xee]), 0, 1, at);
    await fh.close();
    const j = await FileJournal.open(dir);
    expect(j.lastLsn).toBe(2);
    await j.close();
  });

  it('refuses to open when an older segment is damaged, with a stable code', async () => {
    const dir = path.join(root, 'flip-old');
    await filled(dir, 40, 64 * 1024); // several segments
    const names = (await fs.readdir(dir)).sort();
    expect(names.length).toBeGreaterThan(2);
    const fh = await fs.open(path.join(dir, names[0]!), 'r+');
    await fh.write(Buffer.from([0x00, 0x01]), 0, 2, SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + 5);
    await fh.close();
    const err = await FileJournal.open(dir).catch((e: unknown) => e);
    expect(isSrError(err, 'SR_JOURNAL_CORRUPT')).toBe(true);
    expect((err as Error).message).toContain(names[0]);
  });

  it('rolls segments by size and reads across them', async () => {
    const dir = path.join(root, 'roll');
    await filled(dir, 100, 32 * 1024);
    const j = await FileJournal.open(dir, { segmentBytes: 32 * 1024 });
    expect(j.stats().segments).toBeGreaterThan(5);
    let expectLsn = 1;
    for await (const r of j.read(1)) {
      expect(r.lsn).toBe(expectLsn++);
      expect(r.data!.every((b) => b === (r.lsn & 0xff))).toBe(true);
    }
    expect(expectLsn).toBe(101);
    await j.close();
  });

  it('removes a half-created newest segment (crash during roll) and continues', async () => {
    const dir = path.join(root, 'half');
    await filled(dir, 3);
    await fs.writeFile(path.join(dir, segmentFileName(4)), Buffer.from('SRJS'));
    const j = await FileJournal.open(dir);
    expect(j.lastLsn).toBe(3);
    await j.append(lsnWrite(4));
    await j.close();
  });

  it('removes a newest segment whose header never reached the disk, even with records after it', async () => {
    // A roll writes the header through the page cache and syncs it only with the next FLUSH; a direct
    // write after it can reach the disk first. Nothing in such a segment was ever acknowledged.
    const dir = path.join(root, 'zero-header');
    await filled(dir, 3);
    const seg1 = (await fs.readFile(path.join(dir, segmentFileName(1)))).subarray(SEGMENT_HEADER_BYTES);
    const orphan = path.join(dir, segmentFileName(4));
    await fs.writeFile(orphan, Buffer.concat([Buffer.alloc(SEGMENT_HEADER_BYTES), seg1]));
    const j = await FileJournal.open(dir);
    expect(j.lastLsn).toBe(3);
    await expect(fs.stat(orphan)).rejects.toMatchObject({ code: 'ENOENT' });
    await j.append(lsnWrite(4));
    await j.close();
    const again = await FileJournal.open(dir);
    const lsns: number[] = [];
    for await (const r of again.read(1)) lsns.push(r.lsn);
    expect(lsns).toEqual([1, 2, 3, 4]);
    await again.close();
  });

  it('refuses an older segment whose header is zeroes', async () => {
    const dir = path.join(root, 'zero-header-old');
    await filled(dir, 40, 64 * 1024);
    const names = (await fs.readdir(dir)).sort();
    expect(names.length).toBeGreaterThan(2);
    const fh = await fs.open(path.join(dir, names[1]!), 'r+');
    await fh.write(Buffer.alloc(SEGMENT_HEADER_BYTES), 0, SEGMENT_HEADER_BYTES, 0);
    await fh.close();
    const err = await FileJournal.open(dir).catch((e: unknown) => e);
    expect(isSrError(err, 'SR_JOURNAL_CORRUPT')).toBe(true);
    expect((err as Error).message).toContain(names[1]);
  });

  it('keeps syncing correctly while segments roll under it', async () => {
    // Every record fills a segment, and a sync starts on every turn of the event loop while it is
    // written and the segment rolls (direct writes on, so a roll also closes a descriptor): a sync must
    // never use a descriptor that a roll has handed over to be closed.
    const dir = path.join(root, 'sync-rolls');
    const options = { segmentBytes: 8192, directWriteMinBytes: 1 };
    const j = await FileJournal.open(dir, options);
    for (let lsn = 1; lsn <= 50; lsn++) {
      let written = false;
      const appended = j.append(lsnWrite(lsn, 8192)).finally(() => (written = true));
      const syncs: Promise<void>[] = [];
      while (!written) {
        syncs.push(j.sync());
        await new Promise((r) => setImmediate(r));
      }
      await Promise.all([appended, ...syncs]);
    }
    expect(j.stats()).toMatchObject({ failed: undefined, syncedLsn: 50 });
    await j.close();
    const again = await FileJournal.open(dir, options);
    let n = 0;
    for await (const r of again.read(1)) expect(r.lsn).toBe(++n);
    expect(n).toBe(50);
    await again.close();
  });

  it('ends waits for room with SR_SHUTTING_DOWN once told to stop waiting, and keeps its records', async () => {
    const dir = path.join(root, 'stop-waiting');
    const j = await FileJournal.open(dir, { segmentBytes: 8192, maxBytes: 32 * 1024 });
    for (let lsn = 1; j.stats().bytes < 32 * 1024; lsn++) await j.append(lsnWrite(lsn));
    const waiting = j.room()!;
    expect(j.stats().stalled).toBe(true);
    j.stopWaiting();
    await expect(waiting).rejects.toMatchObject({ code: 'SR_SHUTTING_DOWN' });
    await expect(j.room()).rejects.toMatchObject({ code: 'SR_SHUTTING_DOWN' });
    expect(j.stats().stalled).toBe(false);
    const last = j.lastLsn;
    await j.close();
    const again = await FileJournal.open(dir, { segmentBytes: 8192 });
    expect(again.lastLsn).toBe(last);
    await again.close();
  });

  describe('after a crash, with the journal known synced through some LSN', () => {
    /** 40 records of 4 KiB in 64 KiB segments: 16 records each, so LSN 17 and 33 start segments 2 and 3. */
    async function threeSegments(name: string): Promise<{ dir: string; names: string[] }> {
      const dir = path.join(root, name);
      await filled(dir, 40, 64 * 1024);
      const names = (await fs.readdir(dir)).sort();
      expect(names).toEqual([segmentFileName(1), segmentFileName(17), segmentFileName(33)]);
      return { dir, names };
    }
    const recordAt = (i: number): number => SEGMENT_HEADER_BYTES + i * (RECORD_HEADER_BYTES + 4096);
    async function flip(file: string, at: number): Promise<void> {
      const fh = await fs.open(file, 'r+');
      const b = Buffer.alloc(1);
      await fh.read(b, 0, 1, at);
      b[0] = b[0]! ^ 0xff;
      await fh.write(b, 0, 1, at);
      await fh.close();
    }
    const lsnsOf = async (j: FileJournal): Promise<number[]> => {
      const out: number[] = [];
      for await (const r of j.read(1)) out.push(r.lsn);
      return out;
    };

    it('cuts a damaged older segment after that LSN, removes the later ones, and says so', async () => {
      const { dir, names } = await threeSegments('crash-cut');
      await flip(path.join(dir, names[1]!), recordAt(4) + RECORD_HEADER_BYTES + 100); // LSN 21
      const j = await FileJournal.open(dir, { syncedThroughLsn: 10, segmentBytes: 64 * 1024 });
      expect(j.lastLsn).toBe(20);
      expect(await lsnsOf(j)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
      expect(j.repairs).toEqual([
        expect.stringMatching(new RegExp(`^cut ${names[1]} at byte ${recordAt(4)}, LSN 21 onward`)),
        expect.stringMatching(new RegExp(`^removed ${names[2]}: they follow the cut`)),
      ]);
      expect((await fs.readdir(dir)).sort()).toEqual(names.slice(0, 2));
      await j.append(lsnWrite(21));
      await j.close();
    });

    it('refuses the same damage at or before that LSN', async () => {
      const { dir, names } = await threeSegments('crash-refuse');
      await flip(path.join(dir, names[1]!), recordAt(4) + RECORD_HEADER_BYTES + 100); // LSN 21
      const err = await FileJournal.open(dir, { syncedThroughLsn: 21 }).catch((e: unknown) => e);
      expect(isSrError(err, 'SR_JOURNAL_CORRUPT')).toBe(true);
      expect((err as Error).message).toContain(names[1]);
      expect((await fs.readdir(dir)).sort()).toEqual(names); // nothing changed
    });

    it('removes an older segment whose header never reached the disk, and everything after it', async () => {
      const { dir, names } = await threeSegments('crash-header');
      const fh = await fs.open(path.join(dir, names[1]!), 'r+');
      await fh.write(Buffer.alloc(SEGMENT_HEADER_BYTES), 0, SEGMENT_HEADER_BYTES, 0);
      await fh.close();
      const j = await FileJournal.open(dir, { syncedThroughLsn: 3 });
      expect(j.lastLsn).toBe(16);
      expect(j.repairs).toEqual([
        expect.stringMatching(new RegExp(`^removed ${names[1]}, ${names[2]}: created in a crash`)),
      ]);
      expect((await fs.readdir(dir)).sort()).toEqual(names.slice(0, 1));
      await j.close();
    });

    it('cuts where LSNs go missing between segments (a segment that lost its end)', async () => {
      const { dir, names } = await threeSegments('crash-gap');
      await fs.truncate(path.join(dir, names[1]!), recordAt(5)); // keeps LSN 17..21
      const j = await FileJournal.open(dir, { syncedThroughLsn: 16 });
      expect(j.lastLsn).toBe(21);
      expect(j.repairs).toEqual([expect.stringMatching(new RegExp(`^removed ${names[2]}: LSNs 22..32 before them`))]);
      await j.close();
      const strict = await FileJournal.open(dir).catch((e: unknown) => e); // nothing left to cut: opens
      expect(strict).toBeInstanceOf(FileJournal);
      await (strict as FileJournal).close();
    });

    it('keeps the LSNs going when the only segment left had no header', async () => {
      const dir = path.join(root, 'crash-only');
      await fs.mkdir(dir, { recursive: true });
      await fs.writeFile(path.join(dir, segmentFileName(500)), Buffer.alloc(64));
      const j = await FileJournal.open(dir, { syncedThroughLsn: 499 });
      expect(j.lastLsn).toBe(499);
      await j.append(lsnWrite(500));
      await j.close();
    });
  });

  it('ignores files that are not segments', async () => {
    const dir = path.join(root, 'other');
    await filled(dir, 2);
    await fs.writeFile(path.join(dir, 'notes.txt'), 'hello');
    const j = await FileJournal.open(dir);
    expect(j.lastLsn).toBe(2);
    await j.close();
  });
});

describe('FileJournal with group records', () => {
  it('keeps a group record’s JSON across a reopen, between writes, and a cursor yields it', async () => {
    const dir = path.join(root, 'group-records');
    const payload = encodeGroupRecord({
      group: 'shop',
      round: '2.9',
      coordinator: 'db01',
      members: ['db01', 'web01'],
      time: 1_765_000_000_000,
    });
    const j = await FileJournal.open(dir);
    await j.append(lsnWrite(1));
    await j.append({ lsn: 2, kind: RecordKind.GROUP_MARK, disk: 0, offset: 0, length: 0, data: payload });
    await j.append(lsnWrite(3));
    await j.sync();
    await j.close();
    const again = await FileJournal.open(dir);
    const read: ChangeRecord[] = [];
    for await (const r of again.read(1)) read.push({ ...r, ...(r.data ? { data: Buffer.from(r.data) } : {}) });
    expect(read.map((r) => r.kind)).toEqual([RecordKind.WRITE, RecordKind.GROUP_MARK, RecordKind.WRITE]);
    expect(read[1]!.data).toEqual(payload);
    expect(read[2]!.data).toEqual(lsnWrite(3).data);
    const batch = await again.cursor(2).next(1 << 20);
    expect(batch[0]!.kind).toBe(RecordKind.GROUP_MARK);
    expect(Buffer.from(batch[0]!.data!)).toEqual(payload);
    await again.close();
  });
});
