import fsp from 'node:fs/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { fioJobs, requireTools, startFio, tempDir } from '@site-recovery/test';
import { GenerationCause } from '../../src/generation/generation-cause.js';
import { SEGMENT_HEADER_BYTES, decodeRecord } from '../../src/journal/format.js';
import { journalDir, parseSegmentFileName } from '../../src/names.js';
import { GenerationRig } from './generation-rig.js';

let t: { dir: string; cleanup: () => Promise<void> };
let rig: GenerationRig | undefined;
beforeAll(async () => {
  requireTools(['fio']);
  t = await tempDir('generation-switch');
});
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});
afterAll(() => t.cleanup());

const uri = (r: GenerationRig): string => {
  const a = r.agent.address;
  return `nbd://${a.address}:${a.port}/os`;
};

/** fio random writes over the whole disk, each pass verified (crc32c) by reading it back through the agent. */
function verifiedWrites(r: GenerationRig, passes: number): ReturnType<typeof startFio> {
  return startFio([
    '--name=cut',
    '--ioengine=nbd',
    `--uri=${uri(r)}`,
    '--thread',
    '--rw=randwrite',
    '--bs=4k',
    '--iodepth=16',
    '--size=16m',
    `--loops=${passes}`,
    '--verify=crc32c',
    '--do_verify=1',
    '--verify_fatal=1',
    '--output-format=json',
  ]);
}

describe('a new generation begun while the VM writes', () => {
  it('loses no write, and streams each new generation from LSN 1 until the replica equals the source', async () => {
    rig = await GenerationRig.start(t.dir, 'cut01');
    const r = rig;
    await r.drained('the first generation');
    const fio = verifiedWrites(r, 6);
    const begun: string[] = [];
    let finished = false;
    void fio.done.then(() => (finished = true));
    // Cut again and again while fio writes with 16 requests in flight.
    while (!finished && begun.length < 8) {
      await r.agent.newGeneration({ cause: GenerationCause.BITMAP_UNTRUSTED, message: `test cut ${begun.length + 1}` });
      begun.push(r.agent.status().generation!.id!);
      await new Promise((resolve) => setTimeout(resolve, 30));
    }
    const result = await fio.done;
    expect(result.code, result.stderr).toBe(0);
    expect(fioJobs(result.stdout)[0]!.error).toBe(0);
    expect(begun.length, 'cuts made while fio wrote').toBeGreaterThan(1);
    expect(new Set(begun).size).toBe(begun.length);

    const last = await r.drained('the last generation');
    const s = r.agent.status();
    expect(last.hello!.generation).toBe(begun.at(-1));
    expect(s.generation).toMatchObject({
      id: begun.at(-1),
      cause: 'bitmap-untrusted',
      message: `test cut ${begun.length}`,
    });
    const before = begun.slice(0, -1).reverse().slice(0, 7);
    expect(s.generation!.previous.map((g) => g.id).slice(0, before.length)).toEqual(before);
    expect(s.journal.firstLsn).toBe(1);
    // Each generation's stream started at LSN 1 (one superseded before it sent anything sent nothing).
    for (const g of begun) {
      const batches = r.store.connections.filter((c) => c.hello?.generation === g).flatMap((c) => c.batches);
      if (g === begun.at(-1)) expect(batches.length).toBeGreaterThan(0);
      if (batches.length > 0) expect(batches[0]!.first, `generation ${g}`).toBe(1);
    }
    expect(await r.replicaDifference(begun.at(-1)!)).toBe(-1);
  });

  it('lets writers stalled at the journal cap go on, and copies what they wrote', async () => {
    rig = await GenerationRig.start(t.dir, 'cut02', {
      journal: { maxBytes: 2 << 20, segmentBytes: 256 << 10 },
    });
    const r = rig;
    const stalled = (await r.drained('the first generation')).hello!.generation;
    // The cache-store stops acknowledging this generation: the journal fills and the VM's writes stall.
    r.acks = (c) => c.hello!.generation !== stalled;
    const fio = verifiedWrites(r, 1);
    await r.store.until('a write to stall at the journal cap', () => r.agent.status().journal.stalled);
    await r.agent.newGeneration({ cause: GenerationCause.BITMAP_UNTRUSTED, message: 'stalled' });
    const result = await fio.done;
    expect(result.code, result.stderr).toBe(0);
    const last = await r.drained('the new generation');
    expect(await r.replicaDifference(last.hello!.generation)).toBe(-1);
  });
});

describe('continuity lost at run time', () => {
  it('begins a new generation by itself when the cache-store holds records past the journal', async () => {
    rig = await GenerationRig.start(t.dir, 'ahead01');
    const r = rig;
    const first = await r.drained('the first generation');
    const lsn = first.lastLsn;
    // The cache-store's copy of this generation reaches further than the journal (a crash cut it).
    await r.agent.close();
    r.welcomeAt = (c) => (c.hello!.generation === first.hello!.generation ? lsn + 5 : 0);
    await r.restart();
    const next = await r.store.until('a hello of another generation', () => {
      const c = r.latest();
      return c?.hello !== undefined && c.hello.generation !== first.hello!.generation ? c : undefined;
    });
    const s = r.agent.status().generation!;
    expect(s.id).toBe(next.hello!.generation);
    expect(s.cause).toBe('cache-store-ahead');
    expect(s.message).toMatch(new RegExp(`SR_SEQUENCE: cache-store holds LSN ${lsn + 5} .*reached only LSN ${lsn}`));
    expect(s.message).not.toContain('--resync');
    expect(s.previous[0]).toMatchObject({ id: first.hello!.generation, cause: 'new-data-dir' });
    await r.drained('the new generation');
    expect(await r.replicaDifference(next.hello!.generation)).toBe(-1);
  });

  it('begins a new generation by itself when the shipper finds a damaged record in the journal', async () => {
    rig = await GenerationRig.start(t.dir, 'damage01', { journal: { segmentBytes: 1 << 20 } });
    const r = rig;
    const first = await r.drained('the first generation');
    await r.agent.close();
    // The next connection of this generation waits: the VM's records are written, not yet read.
    let hold = true;
    r.welcomeAt = (c) => (c.hello!.generation !== first.hello!.generation ? 0 : hold ? undefined : first.lastLsn);
    await r.restart();
    const fio = verifiedWrites(r, 1);
    expect((await fio.done).code).toBe(0);
    // A record the shipper has not read yet is damaged on disk (a bad sector, say): one byte of its data.
    const dir = journalDir(r.dataDir);
    const names = (await fsp.readdir(dir)).filter((n) => parseSegmentFileName(n) !== undefined).sort();
    const file = `${dir}/${names.at(-2)!}`;
    const buf = await fsp.readFile(file);
    let at = SEGMENT_HEADER_BYTES;
    for (;;) {
      const d = decodeRecord(buf, at, 1 << 25);
      if (!d.ok) throw new Error(`${file} at ${at}: no record with data before damage`);
      if (d.record?.data !== undefined && d.record.data.length > 0) break;
      at += d.bytes;
    }
    buf[at + 64] = buf[at + 64]! ^ 0xff; // past the 44-byte header: in the payload
    await fsp.writeFile(file, buf);
    hold = false;
    const next = await r.store.until('a hello of another generation', () => {
      const c = r.latest();
      return c?.hello !== undefined && c.hello.generation !== first.hello!.generation ? c : undefined;
    });
    const s = r.agent.status().generation!;
    expect(s.cause).toBe('journal-damaged');
    expect(s.message).toContain(names.at(-2));
    await r.drained('the new generation');
    expect(await r.replicaDifference(next.hello!.generation)).toBe(-1);
  });
});
