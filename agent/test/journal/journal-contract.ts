import { RecordKind, isSrError, type ChangeRecord } from '@site-recovery/shared';
import { describe, expect, it } from 'vitest';
import type { Journal } from '../../src/journal/journal.js';

/**
 * The contract of {@link Journal}, run against every implementation. `open` returns a journal
 * over the same storage each time it is called with the same `key`.
 */
export function journalContract(name: string, open: (key: string) => Promise<Journal>): void {
  const rec = (lsn: number, disk = 0): ChangeRecord => ({
    lsn,
    kind: RecordKind.WRITE,
    disk,
    offset: lsn * 4096,
    length: 4096,
    data: Buffer.alloc(4096, lsn & 0xff),
  });

  const readAll = async (j: Journal, from = 1): Promise<ChangeRecord[]> => {
    const out: ChangeRecord[] = [];
    for await (const r of j.read(from)) out.push(r);
    return out;
  };

  describe(`${name}: journal contract`, () => {
    it('reads back what was appended, in LSN order, byte for byte', async () => {
      const j = await open('roundtrip');
      const recs = [
        rec(1),
        { lsn: 2, kind: RecordKind.ZERO, disk: 1, offset: 0, length: 1 << 20 },
        rec(3),
        { lsn: 4, kind: RecordKind.TRIM, disk: 0, offset: 512, length: 512 },
      ] as ChangeRecord[];
      await Promise.all(recs.map((r) => j.append(r)));
      const back = await readAll(j);
      const fields = (r: ChangeRecord): object => ({
        lsn: r.lsn,
        kind: r.kind,
        disk: r.disk,
        offset: r.offset,
        length: r.length,
        data: r.data && Buffer.from(r.data),
      });
      expect(back.map(fields)).toEqual(recs.map(fields));
      await j.close();
    });

    it('refuses an LSN that is not the next one and stays usable', async () => {
      const j = await open('gap');
      await j.append(rec(1));
      const err = await j.append(rec(3)).catch((e: unknown) => e);
      expect(isSrError(err, 'SR_JOURNAL_CORRUPT')).toBe(true);
      await j.append(rec(2));
      expect(j.lastLsn).toBe(2);
      await j.close();
    });

    it('keeps every synced record across a reopen and continues the sequence', async () => {
      const j = await open('reopen');
      for (let i = 1; i <= 50; i++) void j.append(rec(i));
      await j.sync();
      await j.close();
      const k = await open('reopen');
      expect(k.lastLsn).toBe(50);
      await k.append(rec(51));
      const back = await readAll(k, 49);
      expect(back.map((r) => r.lsn)).toEqual([49, 50, 51]);
      await k.close();
    });

    it('read(from) starts at the first record >= from', async () => {
      const j = await open('from');
      for (let i = 1; i <= 10; i++) void j.append(rec(i));
      await j.sync();
      expect((await readAll(j, 7)).map((r) => r.lsn)).toEqual([7, 8, 9, 10]);
      expect(await readAll(j, 11)).toEqual([]);
      await j.close();
    });
  });
}
