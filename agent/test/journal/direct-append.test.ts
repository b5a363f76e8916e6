import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ErrorCode, RecordKind, crc32c, isSrError, type ChangeRecord } from '@site-recovery/shared';
import { afterAll, describe, expect, it } from 'vitest';
import { allocAligned } from '@site-recovery/shared';
import { FileJournal } from '../../src/journal/file-journal.js';
import {
  PAD_MAGIC,
  RECORD_HEADER_BYTES,
  SEGMENT_HEADER_BYTES,
  decodeRecord,
  encodePad,
} from '../../src/journal/format.js';
import { segmentFileName } from '../../src/names.js';
import { lsnWrite } from './lsn-write.js';

const root = await fs.mkdtemp(path.join(os.tmpdir(), 'sr-direct-'));
afterAll(() => fs.rm(root, { recursive: true, force: true }));

/** A write whose payload lies in page-aligned memory, as the NBD server's payload pool hands them out. */
function alignedWrite(lsn: number, size: number): ChangeRecord {
  const data = allocAligned(size).subarray(0, size);
  for (let i = 0; i < size; i += 512) data.fill((lsn * 31 + i / 512) & 0xff, i, Math.min(size, i + 512));
  return { lsn, kind: RecordKind.WRITE, disk: 0, offset: lsn * 4096, length: size, data };
}

async function readAll(j: FileJournal): Promise<ChangeRecord[]> {
  const out: ChangeRecord[] = [];
  for await (const r of j.read(1)) out.push({ ...r, data: r.data && Buffer.from(r.data) });
  return out;
}

const expectRecords = (got: ChangeRecord[], want: ChangeRecord[]): void => {
  expect(got.map((r) => r.lsn)).toEqual(want.map((r) => r.lsn));
  for (const [i, r] of got.entries()) expect(r.data!.equals(want[i]!.data!)).toBe(true);
};

describe('direct journal writes', () => {
  it('puts a large group on a page boundary between pads, and every reader skips the pads', async () => {
    const dir = path.join(root, 'layout');
    const j = await FileJournal.open(dir);
    const recs = [lsnWrite(1, 4096), lsnWrite(2, 1 << 20), lsnWrite(3, 1 << 20), lsnWrite(4, 512)];
    await j.append(recs[0]!);
    await Promise.all([j.append(recs[1]!), j.append(recs[2]!)]); // one group of 2 MiB: direct
    await j.append(recs[3]!);
    await j.sync();
    expect(j.stats().directWrites).toBe(true);

    const seg = await fs.readFile(path.join(dir, segmentFileName(1)));
    const afterFirst = SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + 4096;
    expect(seg.readUInt32BE(afterFirst)).toBe(PAD_MAGIC); // lead pad up to the boundary
    const r2 = decodeRecord(seg, 8192, 1 << 25);
    expect(r2.ok && r2.record?.lsn).toBe(2); // the direct group starts on the page boundary
    const groupEnd = 8192 + 2 * (RECORD_HEADER_BYTES + (1 << 20));
    expect(seg.readUInt32BE(groupEnd)).toBe(PAD_MAGIC); // end pad closes its last block
    const r4 = decodeRecord(seg, Math.ceil(groupEnd / 4096) * 4096, 1 << 25);
    expect(r4.ok && r4.record?.lsn).toBe(4); // the next small write starts on a fresh page

    expectRecords(await readAll(j), recs);
    const cursor = j.cursor(1);
    const viaCursor: number[] = [];
    while (viaCursor.length < 4) for (const r of await cursor.next(64 * 1024)) viaCursor.push(r.lsn);
    cursor.close();
    expect(viaCursor).toEqual([1, 2, 3, 4]);
    await j.close();

    const again = await FileJournal.open(dir); // the opening scan skips the pads too
    expect(again.lastLsn).toBe(4);
    expectRecords(await readAll(again), recs);
    await again.close();
  });

  it('writes large payloads in page-aligned memory from where they lie, each starting on a page in the file', async () => {
    const dir = path.join(root, 'in-place');
    const j = await FileJournal.open(dir, { segmentBytes: 256 << 20 });
    const cursor = j.cursor(1); // an open cursor makes the journal keep its tail in memory: it must get the same bytes
    // In place: 1 MiB, one with a partial last page, and the smallest that qualifies. Copied: small
    // records, and a large one outside page-aligned memory.
    const recs = [
      lsnWrite(1, 4096),
      alignedWrite(2, 1 << 20),
      alignedWrite(3, (1 << 20) + 700),
      lsnWrite(4, 512),
      alignedWrite(5, 64 * 1024),
      lsnWrite(6, 200 * 1024),
      alignedWrite(7, 3 * 4096),
    ];
    await Promise.all(recs.map((r) => j.append(r))); // one group
    await j.sync();
    expect(j.stats().directWrites).toBe(true);

    const seg = await fs.readFile(path.join(dir, segmentFileName(1)));
    const starts = new Map<number, number>();
    for (let at = SEGMENT_HEADER_BYTES; at < seg.length;) {
      const r = decodeRecord(seg, at, 1 << 25);
      if (!r.ok) throw new Error(`damage at ${at}`);
      if (r.record !== undefined) starts.set(r.record.lsn, at + RECORD_HEADER_BYTES);
      at += r.bytes;
    }
    expect([2, 3, 5].map((lsn) => starts.get(lsn)! % 4096)).toEqual([0, 0, 0]);
    expect(starts.get(7)! % 4096).not.toBe(0); // 12 KiB is below the in-place minimum: copied

    expectRecords(await readAll(j), recs);
    const viaCursor: ChangeRecord[] = [];
    while (viaCursor.length < recs.length)
      for (const r of await cursor.next(8 << 20)) viaCursor.push({ ...r, data: r.data && Buffer.from(r.data) });
    cursor.close();
    expectRecords(viaCursor, recs);
    await j.close();
    const again = await FileJournal.open(dir);
    expectRecords(await readAll(again), recs);
    await again.close();
  });

  it('writes an in-place group of more pieces than one system call takes, and one that fills the staging buffer', async () => {
    const dir = path.join(root, 'in-place-split');
    // 4 KiB payloads in place: two pieces each, 2400 in all, past Linux's 1024 per vectored write
    // (libuv splits the call). A 64 KiB staging buffer fills with headers, pads and partial last
    // pages and is written out between payloads.
    const j = await FileJournal.open(dir, { segmentBytes: 256 << 20, direct: { inPlaceMinBytes: 4096 } });
    const many = Array.from({ length: 1200 }, (_, i) => alignedWrite(i + 1, 4096));
    await Promise.all(many.map((r) => j.append(r)));
    expect(j.stats().directWrites).toBe(true); // an EINVAL for too many pieces would have turned them off
    await j.close();
    const small = await FileJournal.open(dir, { segmentBytes: 256 << 20, direct: { stagingBytes: 64 * 1024 } });
    const odd = Array.from({ length: 40 }, (_, i) => alignedWrite(1201 + i, 64 * 1024 + 4000 + i));
    await Promise.all(odd.map((r) => small.append(r)));
    expect(small.stats().directWrites).toBe(true);
    await small.close();
    const again = await FileJournal.open(dir);
    expectRecords(await readAll(again), [...many, ...odd]);
    await again.close();
  });

  it('keeps the whole records before a direct write torn by a crash, and goes on appending', async () => {
    const dir = path.join(root, 'torn');
    const j = await FileJournal.open(dir);
    const recs = [lsnWrite(1, 300 * 1024), lsnWrite(2, 300 * 1024), lsnWrite(3, 300 * 1024)];
    for (const r of recs) await j.append(r); // three direct groups
    await j.close();
    const file = path.join(dir, segmentFileName(1));
    const size = (await fs.stat(file)).size;
    await fs.truncate(file, size - 100 * 1024); // the last group reached the disk only in part
    const reopened = await FileJournal.open(dir);
    expect(reopened.lastLsn).toBe(2);
    const next = lsnWrite(3, 600 * 1024);
    await reopened.append(next);
    expectRecords(await readAll(reopened), [recs[0]!, recs[1]!, next]);
    await reopened.close();
  });

  it('falls back to the page cache when the filesystem refuses O_DIRECT, and loses nothing', async () => {
    const dir = path.join(root, 'refused');
    const einval = (): never => {
      throw Object.assign(new Error('EINVAL: invalid argument, open'), { code: 'EINVAL' });
    };
    const j = await FileJournal.open(dir, { direct: { open: einval } });
    expect(j.stats().directWrites).toBe(false); // known at open, before any large write
    const recs = [lsnWrite(1, 4096), lsnWrite(2, 1 << 20), lsnWrite(3, 1 << 20), lsnWrite(4, 4096)];
    for (const r of recs) await j.append(r);
    expect(j.stats().directWrites).toBe(false); // and status says so
    expectRecords(await readAll(j), recs);
    await j.close();
    const again = await FileJournal.open(dir);
    expectRecords(await readAll(again), recs);
    await again.close();
  });

  it('writes no pad into a segment of format 1 (an older agent can still read it) and refuses an unknown format', async () => {
    const dir = path.join(root, 'v1');
    const first = await FileJournal.open(dir);
    await first.append(lsnWrite(1, 4096));
    await first.close();
    const file = path.join(dir, segmentFileName(1));
    const setVersion = async (v: number): Promise<void> => {
      const buf = await fs.readFile(file);
      buf.writeUInt32BE(v, 8);
      buf.writeUInt32BE(crc32c(buf.subarray(0, 28)), 28);
      await fs.writeFile(file, buf);
    };
    await setVersion(1);
    const j = await FileJournal.open(dir);
    const big = lsnWrite(2, 1 << 20);
    await j.append(big);
    await j.close();
    const content = await fs.readFile(file);
    expect(content.length).toBe(SEGMENT_HEADER_BYTES + 2 * RECORD_HEADER_BYTES + 4096 + (1 << 20)); // no pads: written buffered
    const again = await FileJournal.open(dir);
    expectRecords(await readAll(again), [lsnWrite(1, 4096), big]);
    await again.close();

    await setVersion(3);
    const err = await FileJournal.open(dir).catch((e: unknown) => e);
    expect(isSrError(err, ErrorCode.JOURNAL_CORRUPT)).toBe(true);
    expect((err as Error).message).toMatch(/unsupported segment version 3/);
  });

  it('refuses a pad whose checksum or length is wrong', () => {
    const pad = encodePad(100);
    expect(decodeRecord(pad, 0, 1 << 20)).toEqual({ ok: true, record: undefined, bytes: 100 });
    const badCrc = Buffer.from(pad);
    badCrc[9]! ^= 1;
    expect(decodeRecord(badCrc, 0, 1 << 20)).toMatchObject({
      ok: false,
      reason: 'invalid',
      detail: 'pad checksum mismatch',
    });
    expect(decodeRecord(pad.subarray(0, 50), 0, 1 << 20)).toEqual({ ok: false, reason: 'short' });
    expect(() => encodePad(8)).toThrow(RangeError);
  });

  it('allocates page-aligned memory: an O_DIRECT write from it is accepted', async () => {
    const file = path.join(root, 'aligned.bin');
    const fh = await fs.open(file, fs.constants.O_CREAT | fs.constants.O_WRONLY | fs.constants.O_DIRECT);
    const buf = allocAligned(1 << 20).fill(7);
    const { bytesWritten } = await fh.write(buf, 0, 1 << 20, 0);
    await fh.close();
    expect(bytesWritten).toBe(1 << 20);
    expect((await fs.readFile(file)).equals(buf.subarray(0, 1 << 20))).toBe(true);
  });
});
