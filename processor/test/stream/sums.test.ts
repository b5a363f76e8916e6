import {
  BLOCK_SUM_ALGO,
  BLOCK_SUM_BYTES,
  RecordKind,
  blockSums,
  type ChangeRecord,
  type DiskInfo,
} from '@site-recovery/shared';
import { describe, expect, it } from 'vitest';
import { useProcessorCases } from '../processor-cases.js';
import type { TapSession, Sent } from '../wire-tap.js';
import { Workload, chunks } from '../workload.js';
import { MiB, replicaBytes } from '../helpers.js';
import { DISKS, VM } from './stream-vm.js';

const cases = useProcessorCases('sums');
const BLOCK = 64 * 1024;

/** A generation whose initial copy is done: its records, the last one a SYNC marker. */
function copied(seed: number, disks: DiskInfo[] = DISKS): Workload {
  const w = new Workload(disks, seed);
  w.random(120, 256 * 1024);
  w.sync(1);
  return w;
}

async function sendAll(
  agent: { send: (r: ChangeRecord[], p?: { done: number; total: number }) => Promise<void> },
  w: Workload,
): Promise<void> {
  for (const c of chunks(w.records, 16))
    await agent.send(c, c.some((r) => r.kind === RecordKind.SYNC) ? { done: 1, total: 1 } : undefined);
}

function request(generation: string, blockBytes = BLOCK, algo = BLOCK_SUM_ALGO): object {
  return { t: 'sums-request', vm: VM, generation, blockBytes, algo };
}

/** The `sums` answers of `generation` at `blockBytes`, by disk, concatenated; checks their order and size. */
function collected(s: TapSession, generation: string, blockBytes: number, maxBytes: number): Buffer[] {
  const out = DISKS.map(() => [] as Buffer[]);
  const next = DISKS.map(() => 0);
  for (const m of s.fromProcessor) {
    if (m.t !== 'sums' || m['generation'] !== generation || m['blockBytes'] !== blockBytes) continue;
    const disk = m['disk'] as number;
    const sums = Buffer.from(m['sums'] as Uint8Array);
    expect(m['first'], `disk ${disk}: answers in block order, none missing`).toBe(next[disk]);
    expect(sums.length).toBeLessThanOrEqual(maxBytes);
    expect(sums.length % BLOCK_SUM_BYTES).toBe(0);
    out[disk]!.push(sums);
    next[disk]! += sums.length / BLOCK_SUM_BYTES;
  }
  return out.map((l) => Buffer.concat(l));
}

function end(s: TapSession, generation: string, blockBytes: number): Promise<Sent> {
  return s.waitFor(
    `the sums-end of ${generation} at ${blockBytes}-byte blocks`,
    (m) => m.t === 'sums-end' && m['generation'] === generation && m['blockBytes'] === blockBytes,
  );
}

/** For every block, each sum it has after some prefix of `records` applied on `base`. */
function sumsAtPrefixes(base: Buffer[], records: readonly ChangeRecord[], blockBytes: number): Set<string>[][] {
  const img = base.map((b) => Buffer.from(b));
  const seen = img.map((d) => {
    const all = blockSums(d, blockBytes);
    return Array.from({ length: all.length / BLOCK_SUM_BYTES }, (_, i) => new Set([hex(all, i)]));
  });
  for (const r of records) {
    if (r.kind === RecordKind.WRITE) r.data!.copy(img[r.disk]!, r.offset);
    else if (r.kind === RecordKind.ZERO || r.kind === RecordKind.TRIM)
      img[r.disk]!.fill(0, r.offset, r.offset + r.length);
    else continue;
    const first = Math.floor(r.offset / blockBytes);
    const last = Math.floor((r.offset + r.length - 1) / blockBytes);
    const sums = blockSums(img[r.disk]!.subarray(first * blockBytes, (last + 1) * blockBytes), blockBytes);
    for (let b = first; b <= last; b++) seen[r.disk]![b]!.add(hex(sums, b - first));
  }
  return seen;
}

function hex(sums: Buffer, i: number): string {
  return sums.subarray(i * BLOCK_SUM_BYTES, (i + 1) * BLOCK_SUM_BYTES).toString('hex');
}

describe('sums of the replica for a checksum resync', () => {
  it("serves a new generation's base while its stream is applied: every block's sum between two applied records; at rest, exactly the replica's", async () => {
    const { dataDir, cs } = await cases.start({ options: { sumsSliceBytes: 256 * 1024, sumsMessageBytes: 4096 } });
    cs.tap.keep = (m) => m.t === 'sums' || m.t === 'sums-end';
    const g1 = copied(41);
    await sendAll(await cs.agent(VM, 'g1', DISKS), g1);
    await cs.tap.confirmedAtLeast(VM, g1.lastLsn);
    const base = await replicaBytes(dataDir, VM, DISKS);
    const s = await cs.tap.session(0);

    // Generation g2, same disks: the request comes as soon as its stream is there, and its records meanwhile.
    const a2 = await cs.agent(VM, 'g2', DISKS);
    await s.waitForSent('the g2 stream', (m) => m.t === 'stream' && m['generation'] === 'g2');
    const g2 = new Workload(DISKS, 42);
    g2.random(60, 256 * 1024);
    await s.inject(request('g2'));
    for (const c of chunks(g2.records, 3)) await a2.send(c);
    expect(await end(s, 'g2', BLOCK)).toMatchObject({ vm: VM, available: true });
    const possible = sumsAtPrefixes(base, g2.records, BLOCK);
    const served = collected(s, 'g2', BLOCK, 4096);
    for (const [d, disk] of DISKS.entries()) {
      expect(served[d]!.length / BLOCK_SUM_BYTES).toBe(Math.ceil(disk.size / BLOCK));
      const torn: number[] = [];
      for (let b = 0; b < possible[d]!.length; b++) if (!possible[d]![b]!.has(hex(served[d]!, b))) torn.push(b);
      expect({ disk: disk.id, torn }).toEqual({ disk: disk.id, torn: [] });
    }

    // At rest (everything applied), another block size: exactly blockSums over the replica files.
    await cs.tap.confirmedAtLeast(VM, g2.lastLsn, 'g2');
    await s.inject(request('g2', 4096));
    expect(await end(s, 'g2', 4096)).toMatchObject({ available: true });
    const files = await replicaBytes(dataDir, VM, DISKS);
    const exact = collected(s, 'g2', 4096, 4096);
    for (const [d, f] of files.entries()) expect(exact[d]!.equals(blockSums(f, 4096))).toBe(true);
  });

  it('answers a request that came before its stream once the stream begins; says why when there is no base', async () => {
    const { cs } = await cases.start();
    cs.tap.keep = (m) => m.t === 'sums' || m.t === 'sums-end';
    const s = await cs.tap.session(0);
    // A VM new to the processor: nothing to compare against.
    cs.tap.hold = (m) => m.t === 'stream';
    const a1 = await cs.agent(VM, 'g1', DISKS);
    await s.waitFor('a subscription', (m) => m.t === 'subscribe' && m['vm'] === VM);
    await s.inject(request('g1'));
    cs.tap.release();
    expect(await end(s, 'g1', BLOCK)).toMatchObject({ available: false, reason: 'no replica before this generation' });
    const g1 = copied(43);
    await sendAll(a1, g1);
    await cs.tap.confirmedAtLeast(VM, g1.lastLsn);

    // Same disks, asked for before the stream reaches the processor: answered once it has begun.
    cs.tap.hold = (m) => m.t === 'stream' && m['generation'] === 'g2';
    await cs.agent(VM, 'g2', DISKS);
    await s.waitFor('a subscription after g2 appeared', (m) => m.t === 'subscribe' && m['generation'] === 'g1');
    await s.inject(request('g2', 1024 * 1024));
    await s.inject(request('g2', BLOCK, 'crc32c'));
    cs.tap.release();
    expect(await end(s, 'g2', BLOCK)).toMatchObject({
      available: false,
      reason: expect.stringContaining('crc32c') as unknown,
    });
    // The newer request (another function) replaced the one before it.
    expect(s.fromProcessor.some((m) => m.t === 'sums-end' && m['blockBytes'] === 1024 * 1024)).toBe(false);
    await s.inject(request('g2', 1024 * 1024));
    expect(await end(s, 'g2', 1024 * 1024)).toMatchObject({ available: true });
    expect(collected(s, 'g2', 1024 * 1024, 1 << 20).map((b) => b.length)).toEqual(
      DISKS.map((d) => Math.ceil(d.size / MiB) * BLOCK_SUM_BYTES),
    );

    // Another disk layout: a new replica of zeroes, no base.
    const other: DiskInfo[] = [{ id: 'os', size: 2 * MiB }];
    await cs.agent(VM, 'g3', other);
    await s.waitForSent('the g3 stream', (m) => m.t === 'stream' && m['generation'] === 'g3');
    await s.inject(request('g3'));
    expect(await end(s, 'g3', BLOCK)).toMatchObject({ available: false, reason: 'disk layout changed' });
  });
});
