import { randomBytes, randomInt } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RecordKind, blockSums } from '@site-recovery/shared';
import { firstDifference, tempDir, waitUntil } from '@site-recovery/test';
import { BLOCK, DiffRig, dataRecords } from './diff-rig.js';

const CHUNK = 1 << 20;
/** 8 MiB and a short tail: the last chunk and the last block are short. */
const SIZE = 8 * CHUNK + 1000;

/** A source image of random data with zero stretches, and a replica equal to it. */
async function images(dir: string): Promise<{ source: string; replica: string; data: Buffer }> {
  const data = randomBytes(SIZE);
  data.fill(0, 2 * CHUNK, 3 * CHUNK); // a zero chunk
  data.fill(0, 5 * CHUNK + 7 * BLOCK, 5 * CHUNK + 40 * BLOCK);
  const source = path.join(dir, 'source.img');
  const replica = path.join(dir, 'replica.img');
  await fsp.writeFile(source, data);
  await fsp.writeFile(replica, data);
  return { source, replica, data };
}

/** Changes blocks of the source behind the agent's back (as a lost data dir leaves it). */
async function change(file: string, blocks: readonly number[], zero = false): Promise<void> {
  const fh = await fsp.open(file, 'r+');
  try {
    for (const b of blocks) {
      const length = Math.min(BLOCK, SIZE - b * BLOCK);
      await fh.write(zero ? Buffer.alloc(length) : randomBytes(length), 0, length, b * BLOCK);
    }
  } finally {
    await fh.close();
  }
}

describe('the initial copy by difference', () => {
  let t: { dir: string; cleanup: () => Promise<void> };
  let rig: DiffRig | undefined;
  beforeEach(async () => {
    t = await tempDir('diffcopy');
  });
  afterEach(async () => {
    await rig?.close();
    rig = undefined;
    await t.cleanup();
  });

  it('journals only the blocks whose sums differ from the replica, zero ones as ZERO, and the replica converges', async () => {
    const { source, replica } = await images(t.dir);
    const lastBlock = Math.ceil(SIZE / BLOCK) - 1;
    await change(source, [3, 4, 5, 700, 1500, lastBlock]); // 3..5 are neighbours: one run
    await change(source, [1100, 1101], true); // were random, now zero
    await change(source, [2 * 256 + 9], false); // in the zero chunk: now data
    rig = await DiffRig.open(t.dir, source, replica);
    const r = rig;
    const { sync, exchange } = r.copy();
    r.onRequest = () => void r.answer(exchange);
    await sync.run();

    // Chunks are copied several at a time: their records interleave in the journal.
    const recs = dataRecords(await r.records()).sort((a, b) => a.offset - b.offset);
    expect(recs.map((x) => [x.kind, x.offset, x.length])).toEqual([
      [RecordKind.WRITE, 3 * BLOCK, 3 * BLOCK],
      [RecordKind.WRITE, 521 * BLOCK, BLOCK],
      [RecordKind.WRITE, 700 * BLOCK, BLOCK],
      [RecordKind.ZERO, 1100 * BLOCK, 2 * BLOCK],
      [RecordKind.WRITE, 1500 * BLOCK, BLOCK],
      [RecordKind.WRITE, lastBlock * BLOCK, SIZE - lastBlock * BLOCK],
    ]);
    expect(r.requests).toEqual([{ t: 'sums-request', vm: 'vm1', generation: 'g2', blockBytes: BLOCK, algo: 'xxh128' }]);
    const sent = 6 * BLOCK + (SIZE - lastBlock * BLOCK);
    expect(sync.status()).toMatchObject({
      state: 'done',
      method: 'difference',
      copiedBytes: SIZE,
      comparedBytes: SIZE,
      equalBytes: SIZE - sent - 2 * BLOCK,
      sentBytes: sent,
      zeroedBytes: 2 * BLOCK,
    });
    expect(r.progress[0]).toEqual({ copied: SIZE, complete: true });
    await r.replay();
    expect(await firstDifference(source, replica)).toBe(-1);
    // The sums were scratch: gone once the copy is complete.
    await expect(fsp.stat(path.join(t.dir, 'resync-sums.bin'))).rejects.toThrow(/ENOENT/);
  });

  it('stays exact while the VM writes during the copy', async () => {
    const { source, replica } = await images(t.dir);
    // Every other block differs: a write that raced a block's read would show as old data sent after it.
    await change(
      source,
      Array.from({ length: 1024 }, (_, i) => 2 * i),
    );
    rig = await DiffRig.open(t.dir, source, replica);
    const r = rig;
    const { sync, exchange } = r.copy({ markEveryBytes: CHUNK });
    r.onRequest = () => void r.answer(exchange, { perMessage: 64 });
    let copying = true;
    const copy = sync.run().finally(() => (copying = false));
    await waitUntil(
      'the copy to start comparing',
      () => (sync.status().state === 'copying' ? true : undefined),
      10_000,
      1,
    );
    // Writes go on, four at a time, over every chunk until the copy is done: they race its reads.
    const write = (): Promise<void> => {
      const offset = randomInt(0, SIZE - 3 * BLOCK);
      const data = randomInt(0, 4) === 0 ? Buffer.alloc(BLOCK * 2) : randomBytes(randomInt(1, 3 * BLOCK));
      return r.capture.write(offset, data, false);
    };
    let writes = 0;
    while (copying) {
      await Promise.all([write(), write(), write(), write()]);
      writes += 4;
    }
    await copy;
    expect(writes).toBeGreaterThan(8);
    expect(sync.status().state).toBe('done');
    await r.replay();
    expect(await firstDifference(source, replica)).toBe(-1);
  });

  it('resumes after a restart mid-copy from the persisted point, asking for the sums again', async () => {
    const { source, replica } = await images(t.dir);
    await change(source, [10, 600, 1300, 1900]);
    rig = await DiffRig.open(t.dir, source, replica);
    const r = rig;
    const first = r.copy({ markEveryBytes: CHUNK, parallel: 1 });
    r.onRequest = () => void r.answer(first.exchange);
    const run = first.sync.run();
    await waitUntil(
      'the copy to persist a point past 2 MiB',
      () => ((r.progress[0]?.copied ?? 0) >= 2 * CHUNK ? true : undefined),
      10_000,
      1,
    );
    first.sync.stop();
    await run;
    const resumeAt = r.progress[0]!.copied;
    expect(resumeAt).toBeLessThan(SIZE);
    // Meanwhile the processor applied what it got, and the VM wrote on both sides of the resume point.
    await r.replay();
    await r.capture.write(5 * BLOCK, randomBytes(BLOCK), false);
    await r.capture.write(resumeAt + 3 * BLOCK, randomBytes(BLOCK), false);
    const second = r.copy({ startAt: resumeAt, markEveryBytes: CHUNK, parallel: 1 });
    r.onRequest = () => void r.replay().then(() => r.answer(second.exchange));
    await second.sync.run();
    expect(r.requests.length).toBe(2);
    expect(second.sync.status()).toMatchObject({ state: 'done', method: 'difference', comparedBytes: SIZE - resumeAt });
    await r.replay();
    expect(await firstDifference(source, replica)).toBe(-1);
  });

  it('copies every chunk when the replica cannot be compared: zero chunks as ZERO records', async () => {
    const { source, replica } = await images(t.dir);
    await fsp.writeFile(replica, randomBytes(SIZE)); // a replica holding anything
    rig = await DiffRig.open(t.dir, source, replica);
    const r = rig;
    const { sync, exchange } = r.copy();
    r.onRequest = (q) =>
      void exchange.onMessage({
        t: 'sums-end',
        vm: q.vm,
        generation: q.generation,
        blockBytes: BLOCK,
        available: false,
        reason: 'disk layout changed',
      });
    await sync.run();
    const recs = dataRecords(await r.records()).sort((a, b) => a.offset - b.offset);
    expect(recs.map((x) => [x.kind, x.offset])).toEqual(
      Array.from({ length: 9 }, (_, c) => [c === 2 ? RecordKind.ZERO : RecordKind.WRITE, c * CHUNK]),
    );
    expect(sync.status()).toMatchObject({
      method: 'full',
      fullCopyReason: 'the replica cannot be compared: disk layout changed',
      sentBytes: SIZE - CHUNK,
      zeroedBytes: CHUNK,
    });
    expect(sync.status().comparedBytes).toBeUndefined();
    await r.replay();
    expect(await firstDifference(source, replica)).toBe(-1);
  });

  it('waits for the sums with a status that says so, and copies every block after the silence allowed', async () => {
    const { source, replica } = await images(t.dir);
    rig = await DiffRig.open(t.dir, source, replica);
    const r = rig;
    const { sync, exchange } = r.copy({ sums: { waitMs: 300 } });
    const run = sync.run();
    const waiting = await waitUntil(
      'the copy to wait for the sums',
      () => {
        const s = sync.status();
        return s.state === 'waiting-for-sums' && s.sums !== undefined ? s : undefined;
      },
      5000,
      1,
    );
    expect(waiting.sums).toMatchObject({ blockBytes: BLOCK, attempt: 1, receivedBlocks: 0, totalBlocks: 2049 });
    expect(waiting.method).toBeUndefined();
    await exchange.onMessage({
      t: 'sums',
      vm: 'vm1',
      generation: 'g2',
      disk: 0,
      first: 0,
      blockBytes: BLOCK,
      sums: Buffer.alloc(160),
    });
    expect(sync.status().sums?.receivedBlocks).toBe(10);
    await run;
    expect(sync.status()).toMatchObject({
      state: 'done',
      method: 'full',
      fullCopyReason: 'no answer to the sums request within 300 ms of silence',
    });
    await r.replay();
    expect(await firstDifference(source, replica)).toBe(-1);
  });

  it('asks again when an answer has a gap, and copies every block after the attempts allowed', async () => {
    const { source, replica } = await images(t.dir);
    await change(source, [77]);
    rig = await DiffRig.open(t.dir, source, replica);
    const r = rig;
    const first = r.copy();
    r.onRequest = () => void r.answer(first.exchange, { skip: r.requests.length === 1 ? 2 : -1 });
    await first.sync.run();
    expect(r.requests.length).toBe(2);
    expect(first.sync.status()).toMatchObject({ method: 'difference', sentBytes: BLOCK });

    const second = r.copy({ sums: { attempts: 2 } });
    r.onRequest = () => void r.answer(second.exchange, { skip: 1 });
    await second.sync.run();
    expect(r.requests.length).toBe(4);
    expect(second.sync.status().fullCopyReason).toBe(
      '2 sums answers could not be used, the last: sums of disk 0 from block 600, expected block 300',
    );
  });

  it('compares each chunk once its sums are here, and sends the rest whole when the answer stops mid-way', async () => {
    const { source, replica } = await images(t.dir);
    await change(source, [10, 1000]);
    rig = await DiffRig.open(t.dir, source, replica);
    const r = rig;
    const { sync, exchange } = r.copy({ sums: { waitMs: 500 } });
    const sums = blockSums(await fsp.readFile(replica), BLOCK);
    const part = (first: number, count: number): Buffer => sums.subarray(first * 16, (first + count) * 16);
    const message = { t: 'sums', vm: 'vm1', generation: 'g2', disk: 0, blockBytes: BLOCK } as const;
    r.onRequest = () => void exchange.onMessage({ ...message, first: 0, sums: part(0, 600) });
    const run = sync.run();
    // Blocks 0..599 cover chunks 0 and 1: those are compared while the answer is still coming.
    const partial = await waitUntil(
      'the first two chunks to be compared before the rest of the answer',
      () => (sync.status().comparedBytes === 2 * CHUNK ? sync.status() : undefined),
      10_000,
      1,
    );
    expect(partial).toMatchObject({ state: 'copying', method: 'difference', sums: { receivedBlocks: 600 } });
    await exchange.onMessage({ ...message, first: 600, sums: part(600, 500) }); // to chunk 4's middle
    await run; // then silence: the rest goes whole
    const s = sync.status();
    expect(s).toMatchObject({
      state: 'done',
      method: 'full',
      fullCopyReason: 'no answer to the sums request within 500 ms of silence',
      comparedBytes: 4 * CHUNK,
      equalBytes: 4 * CHUNK - 2 * BLOCK,
      zeroedBytes: 0,
    });
    expect(s.sentBytes).toBe(2 * BLOCK + (SIZE - 4 * CHUNK));
    await r.replay();
    expect(await firstDifference(source, replica)).toBe(-1);
  });
});
