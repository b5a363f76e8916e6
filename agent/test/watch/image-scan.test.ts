import { randomBytes, randomInt } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RecordKind } from '@site-recovery/shared';
import { tempDir } from '@site-recovery/test';
import { BLOCK, ScanFixture, applied, eventsSettled, quiet, writeAt } from './scan-fixture.js';

const SIZE = 64 * BLOCK; // 4 MiB: 16 reads of 4 blocks

describe('watch mode: the scan', () => {
  let t: { dir: string; cleanup: () => Promise<void> };
  let image: string;
  let content: Buffer;
  const open: ScanFixture[] = [];
  const fixture = async (o: Parameters<typeof ScanFixture.open>[2] = {}): Promise<ScanFixture> => {
    const { fixture: f } = await ScanFixture.open(t.dir, image, o);
    open.push(f);
    return f;
  };

  beforeEach(async () => {
    t = await tempDir('watch-scan');
    image = path.join(t.dir, 'os.img');
    // Data in most blocks, whole zero blocks in between, and a last block that is short of a full one.
    content = randomBytes(SIZE - 1000);
    for (const b of [3, 4, 5, 20, 41]) content.fill(0, b * BLOCK, (b + 1) * BLOCK);
    await fsp.writeFile(image, content);
    await quiet(image);
  });
  afterEach(async () => {
    for (const f of open.splice(0)) await f.close();
    await t.cleanup();
  });

  it('the first scan sends every block (zero ones as ZERO); a later one exactly the blocks that changed', async () => {
    const f = await fixture({ manualEvents: true });
    const first = await f.scanner.scan();
    const records = await f.newRecords();
    expect(first).toMatchObject({ clean: true, blocksChanged: 64, bytesRead: SIZE - 1000 });
    // Applied over garbage, the first scan alone rebuilds the image: nothing relies on a zeroed replica.
    expect(applied(Buffer.alloc(SIZE - 1000, 0xaa), records).equals(content)).toBe(true);
    const zeroed = records.filter((r) => r.kind === RecordKind.ZERO).map((r) => [r.offset / BLOCK, r.length / BLOCK]);
    // A run of changed blocks within one read (4 blocks here) goes as one record.
    expect(zeroed).toEqual([
      [3, 1],
      [4, 2],
      [20, 1],
      [41, 1],
    ]);
    expect(records.at(-2)).toMatchObject({ kind: RecordKind.SYNC, offset: SIZE - 1000 }); // the copy is complete
    expect(records.at(-1)).toMatchObject({ kind: RecordKind.SCAN, lsn: first.markerLsn });

    // Three blocks change: unaligned bytes inside one, one across two blocks, one block zeroed whole.
    const inside = randomInt(7, 60) * BLOCK + 1234;
    await writeAt(image, inside, randomBytes(100));
    await writeAt(image, 30 * BLOCK - 10, randomBytes(20));
    await writeAt(image, 50 * BLOCK, Buffer.alloc(BLOCK));
    const now = await fsp.readFile(image);
    await quiet(image);
    const second = await f.scanner.scan();
    const changed = await f.newRecords();
    const wanted = [...new Set([Math.floor(inside / BLOCK), 29, 30, 50])].sort((a, b) => a - b);
    expect(second).toMatchObject({ clean: true, blocksChanged: wanted.length });
    const data = changed.filter((r) => r.kind !== RecordKind.SCAN);
    expect(data.flatMap((r) => Array.from({ length: r.length / BLOCK }, (_, k) => r.offset / BLOCK + k))).toEqual(
      wanted,
    );
    expect(data.find((r) => r.offset === 50 * BLOCK)).toMatchObject({ kind: RecordKind.ZERO, length: BLOCK });
    expect(changed.at(-1)).toMatchObject({ kind: RecordKind.SCAN, lsn: second.markerLsn });
    expect(applied(applied(Buffer.alloc(SIZE - 1000), records), changed).equals(now)).toBe(true);

    // Nothing changed: nothing sent, and no marker (the replica already stands at the last one).
    const third = await f.scanner.scan();
    expect(third).toMatchObject({ clean: true, blocksChanged: 0, bytesShipped: 0 });
    expect(third.markerLsn).toBeUndefined();
    expect(await f.newRecords()).toEqual([]);
  });

  it('persisted sums survive a restart: nothing is sent again, then only what changed while it was down', async () => {
    const f = await fixture({ manualEvents: true });
    await f.scanner.scan();
    await f.close();
    open.length = 0;
    // Changed while the agent was away.
    await writeAt(image, 10 * BLOCK + 5, randomBytes(10));
    await quiet(image);

    const { fixture: again, discarded } = await ScanFixture.open(t.dir, image, {
      copyComplete: true,
      manualEvents: true,
    });
    open.push(again);
    expect(discarded).toBeUndefined();
    const report = await again.scanner.scan();
    const records = await again.newRecords();
    expect(report.blocksChanged).toBe(1);
    expect(records.map((r) => [r.kind, r.offset])).toEqual([
      [RecordKind.WRITE, 10 * BLOCK],
      [RecordKind.SCAN, 1], // the scan's number
    ]);
  });

  it('sums of another generation or damaged ones are not trusted: every block is sent again', async () => {
    const f = await fixture({ manualEvents: true });
    await f.scanner.scan();
    await f.close();
    open.length = 0;
    const other = await ScanFixture.open(t.dir, image, { generation: 'g2', manualEvents: true });
    open.push(other.fixture);
    expect(other.discarded).toMatch(/made for generation g1, not g2; every block is sent again/);
    expect((await other.fixture.scanner.scan()).blocksChanged).toBe(64);
    await other.fixture.close();
    open.length = 0;

    const raw = await fsp.readFile(other.fixture.sumsFile);
    raw.writeUInt8(raw.readUInt8(raw.length - 40) ^ 1, raw.length - 40);
    await fsp.writeFile(other.fixture.sumsFile, raw);
    const damaged = await ScanFixture.open(t.dir, image, { generation: 'g2', manualEvents: true });
    open.push(damaged.fixture);
    expect(damaged.discarded).toMatch(/checksum mismatch/);
  });

  it('a write during a scan makes it unclean (no marker), and the scan after it, quiet, is clean', async () => {
    let wrote = false;
    const f = await fixture({
      options: { settleMs: 100 },
      // The writer strikes while the copy reads: at its first record, ahead of where it reads.
      onAppend: () => {
        if (wrote) return;
        wrote = true;
        const fd = fs.openSync(image, 'r+');
        fs.writeSync(fd, randomBytes(BLOCK), 0, BLOCK, 60 * BLOCK);
        fs.closeSync(fd);
      },
    });
    const before = f.watcher!.activity;
    const overlapped = await f.scanner.scan();
    expect(wrote).toBe(true);
    expect(overlapped.clean).toBe(false);
    expect(overlapped.unclean).toMatch(
      /^(a change event arrived during the scan|disk os was modified during the scan)$/,
    );
    expect(overlapped.markerLsn).toBeUndefined();
    expect((await f.newRecords()).some((r) => r.kind === RecordKind.SCAN)).toBe(false);

    // Quiet again: the next scan sends what the overlapped one may have missed, and marks the state.
    await eventsSettled(f.watcher!, before);
    const mark = f.watcher!.activity;
    await quiet(image);
    await eventsSettled(f.watcher!, mark);
    const next = await f.scanner.scan();
    expect(next.clean).toBe(true);
    expect(next.markerLsn).toBeDefined();
    expect((await f.newRecords()).at(-1)).toMatchObject({ kind: RecordKind.SCAN, lsn: next.markerLsn });
  });

  it('a scan is not clean when the image was modified less than the debounce before it started', async () => {
    const f = await fixture({ manualEvents: true, options: { debounceMs: 60_000 } });
    await fsp.utimes(image, new Date(), new Date(Date.now() - 1000));
    const report = await f.scanner.scan();
    expect(report.clean).toBe(false);
    expect(report.unclean).toMatch(/modified \d+ ms before the scan started \(less than the debounce\)/);
  });

  it('an event counted during the scan makes it unclean even when the modification time did not move', async () => {
    const f = await fixture({ manualEvents: true });
    const scan = f.scanner.scan();
    f.events++;
    const report = await scan;
    expect(report).toMatchObject({ clean: false, unclean: 'a change event arrived during the scan' });
  });
});
