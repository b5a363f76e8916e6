import fs from 'node:fs';
import path from 'node:path';
import { RecordKind, encodeMessage, recordChecksum, type ChangeRecord, type DiskInfo } from '@site-recovery/shared';
import { describe, expect, it } from 'vitest';
import type { Processor } from '../../src/processor.js';
import { FakeCacheStore, Workload, chunks } from '../fake-cache-store.js';
import {
  MiB,
  expectImages,
  getJson,
  readState,
  replicaBytes,
  replicaFile,
  startProcessor,
  streaming,
  until,
  vmStatus,
  useCaseDirs,
} from '../helpers.js';

const DISKS: DiskInfo[] = [
  { id: 'os', size: 16 * MiB },
  { id: 'data', size: 4 * MiB },
];
const VM = 'web01';

let fake: FakeCacheStore | undefined;
let processor: Processor | undefined;
const caseDir = useCaseDirs('processor', async () => {
  await processor?.close();
  await fake?.close();
  processor = undefined;
  fake = undefined;
});

/** A fresh data dir, fake cache-store and processor. */
async function setup(): Promise<{ dataDir: string; fake: FakeCacheStore; processor: Processor }> {
  const dataDir = caseDir();
  fake = await FakeCacheStore.start();
  processor = await startProcessor(dataDir, fake.url);
  return { dataDir, fake, processor };
}

function withBadCrc(r: ChangeRecord): ChangeRecord {
  return { ...r, crc: (recordChecksum(r, r.data) ^ 0x1) >>> 0 };
}

describe('processor applying a stream from the cache-store', () => {
  it('applies writes, zeroes and trims so the replica equals the source image, skipping records it already holds', async () => {
    const { dataDir, fake, processor } = await setup();
    const w = new Workload(DISKS, 12345);
    w.fill(0, 0, DISKS[0]!.size, 0x5a); // whole disk, compressible: travels lz4
    w.random(600, 256 * 1024);
    w.zero(1, 0, DISKS[1]!.size);
    w.random(300, 64 * 1024);
    w.trim(0, 4096, 8 * MiB);
    w.random(100, 4096);

    const { s, from } = await streaming(fake, 0, VM, 'g1', w);
    expect(from).toBe(1);
    const sub = await s.subscribeOf(VM);
    expect(sub).toMatchObject({ t: 'subscribe', vm: VM, generation: null, from: 1 });
    await s.batch(VM, 'g1', w.range(1, 50));
    // A batch that begins before the applied position: the processor skips what it has.
    await s.batch(VM, 'g1', w.range(30, 120));
    for (const c of chunks(w.range(121, w.lastLsn), 37)) await s.batch(VM, 'g1', c);
    await s.appliedAtLeast(VM, w.lastLsn);
    expectImages(await replicaBytes(dataDir, VM, DISKS), w.images);

    const st = await vmStatus(processor.listen, VM);
    expect(st).toMatchObject({
      vm: VM,
      generation: 'g1',
      appliedLsn: w.lastLsn,
      durableLsn: w.lastLsn,
      cacheStoreLastLsn: w.lastLsn,
      pendingRecords: 0,
    });
    expect(st.disks).toEqual(DISKS.map((d) => ({ ...d, path: replicaFile(dataDir, VM, d.id) })));
    expect(st.lagMs.samples).toBeGreaterThan(0);
    expect(st.lagMs.p50).not.toBeNull();
    expect(st.lagMs.p99!).toBeGreaterThanOrEqual(st.lagMs.p50!);
    expect(s.received.filter((m) => m.t === 'invalid')).toEqual([]);
    const health = await getJson<{ ok: boolean; cacheStore: { connected: boolean } }>(processor.listen, '/health');
    expect(health).toMatchObject({ ok: true, cacheStore: { connected: true } });
    const status = await getJson<{ cacheStore: { url: string; connected: boolean } }>(processor.listen, '/status');
    expect(status.cacheStore).toMatchObject({ url: fake.url, connected: true });
  });

  it('refuses a batch with a bad checksum, an out-of-bounds record or an LSN gap: nothing of it reaches the replica', async () => {
    const { dataDir, fake, processor } = await setup();
    const w = new Workload(DISKS, 777);
    w.random(40, 128 * 1024);
    const good = w.lastLsn;
    const { s: s0 } = await streaming(fake, 0, VM, 'g1', w);
    await s0.batch(VM, 'g1', w.range(1, good));
    await s0.appliedAtLeast(VM, good);
    const before = await replicaBytes(dataDir, VM, DISKS);

    // The next records as they should be; each bad batch damages one record in the middle, after good ones.
    w.random(20, 128 * 1024);
    const next = w.range(good + 1, w.lastLsn);
    const cases: { code: string; batch: ChangeRecord[] }[] = [
      { code: 'SR_CHECKSUM', batch: next.map((r, i) => (i === 10 ? withBadCrc(r) : r)) },
      {
        code: 'SR_BOUNDS',
        batch: next.map((r, i) => {
          if (i !== 10) return r;
          const data = Buffer.alloc(8192, 0xee);
          const oob = {
            lsn: r.lsn,
            kind: RecordKind.WRITE,
            disk: 1,
            offset: DISKS[1]!.size - 4096,
            length: 8192,
            data,
          } as const;
          return { ...oob, crc: recordChecksum(oob, data) };
        }),
      },
      {
        code: 'SR_BOUNDS',
        batch: next.map((r, i) => {
          if (i !== 5) return r;
          const z = { lsn: r.lsn, kind: RecordKind.ZERO, disk: 7, offset: 0, length: 512 } as const;
          return { ...z, crc: recordChecksum(z, undefined) };
        }),
      },
      // Records good+2.. with good+1 missing.
      { code: 'SR_SEQUENCE', batch: next.slice(1) },
    ];
    for (const [i, c] of cases.entries()) {
      const { s, from } = i === 0 ? { s: s0, from: 1 } : await streaming(fake, i, VM, 'g1', w);
      if (i > 0) {
        expect(from).toBe(good + 1);
        // A new stream is told at once what is already durable.
        await s.appliedAtLeast(VM, good);
      }
      await s.batch(VM, 'g1', c.batch);
      const err = await s.waitFor((m) => m.t === 'error');
      expect(err).toMatchObject({ t: 'error', code: c.code });
      await s.closed;
      expectImages(await replicaBytes(dataDir, VM, DISKS), before);
      const st = await vmStatus(processor.listen, VM);
      expect(st.state).toBe('error');
      expect(st.errorCode).toBe(c.code);
      expect(st.error).toContain(c.code);
      expect(st.appliedLsn).toBe(good);
      expect(fake.applied(VM).every((m) => (m['lsn'] as number) <= good)).toBe(true);
    }

    // Good records again: applied from exactly where the replica stood, and the error clears.
    const { s, from } = await streaming(fake, cases.length, VM, 'g1', w);
    expect(from).toBe(good + 1);
    await s.batch(VM, 'g1', next);
    await s.appliedAtLeast(VM, w.lastLsn);
    expectImages(await replicaBytes(dataDir, VM, DISKS), w.images);
    const st = await vmStatus(processor.listen, VM);
    expect(st.state).not.toBe('error');
    expect(st.error).toBeUndefined();
    expect(st.lastError?.code).toBe('SR_SEQUENCE');
  });

  it('refuses malformed frames and messages out of turn with SR_PROTOCOL', async () => {
    const { fake } = await setup();
    const w = new Workload(DISKS, 4);
    w.random(5);
    const s0 = await fake.listed(0, [{ vm: VM, generation: 'g1', disks: DISKS, firstLsn: 1, lastLsn: 5 }]);
    await s0.subscribeOf(VM);
    // A batch before its stream was announced.
    await s0.batch(VM, 'g1', w.range(1, 5));
    expect(await s0.waitFor((m) => m.t === 'error')).toMatchObject({ code: 'SR_PROTOCOL' });
    await s0.closed;

    const s1 = await fake.listed(1, [{ vm: VM, generation: 'g1', disks: DISKS, firstLsn: 1, lastLsn: 5 }]);
    await s1.subscribeOf(VM);
    await s1.sendFrame(Buffer.from([0xc1, 0x00, 0xff]));
    expect(await s1.waitFor((m) => m.t === 'error')).toMatchObject({ code: 'SR_PROTOCOL' });
    await s1.closed;

    const s2 = await fake.listed(2, [{ vm: VM, generation: 'g1', disks: DISKS, firstLsn: 1, lastLsn: 5 }]);
    await s2.subscribeOf(VM);
    s2.stream('other-vm', 'g1', DISKS, 1);
    expect(await s2.waitFor((m) => m.t === 'error')).toMatchObject({ code: 'SR_PROTOCOL' });
    await s2.closed;

    // A stream whose batches belong to another generation.
    const { s: s3 } = await streaming(fake, 3, VM, 'g1', w);
    await s3.batch(VM, 'g2', w.range(1, 5));
    expect(await s3.waitFor((m) => m.t === 'error')).toMatchObject({ code: 'SR_GENERATION' });
    await s3.closed;

    // A batch whose record table does not match its count.
    const { s: s4 } = await streaming(fake, 4, VM, 'g1', w);
    s4.send({
      t: 'batch',
      vm: VM,
      generation: 'g1',
      first: 1,
      count: 3,
      recs: Buffer.alloc(40),
      codec: 'none',
      raw: 0,
      data: Buffer.alloc(0),
    });
    expect(await s4.waitFor((m) => m.t === 'error')).toMatchObject({ code: 'SR_PROTOCOL' });
    await s4.closed;
  });

  it('confirms only positions that are already persisted, in rounds rather than per batch', async () => {
    const { dataDir, fake } = await setup();
    const w = new Workload(DISKS, 99);
    w.random(3000, 16 * 1024);
    const { s } = await streaming(fake, 0, VM, 'g1', w);
    const violations: string[] = [];
    s.ws.on('message', () => {
      const m = s.received[s.received.length - 1];
      if (m?.t !== 'applied') return;
      // Read synchronously on arrival: the state on disk must already cover what is confirmed.
      const state = JSON.parse(fs.readFileSync(path.join(dataDir, 'replicas', VM, 'state.json'), 'utf8')) as {
        appliedLsn: number;
        generation: string;
      };
      if (state.appliedLsn < (m['lsn'] as number) || state.generation !== m['generation'])
        violations.push(`confirmed ${String(m['lsn'])}, persisted ${state.appliedLsn}`);
    });
    const batches = chunks(w.records, 10);
    for (const c of batches) await s.batch(VM, 'g1', c);
    await s.appliedAtLeast(VM, w.lastLsn);
    const applied = s.received.filter((m) => m.t === 'applied').map((m) => m['lsn'] as number);
    expect(violations).toEqual([]);
    expect(applied.length).toBeGreaterThan(0);
    expect(applied.length).toBeLessThan(batches.length / 3);
    expect([...applied].sort((a, b) => a - b)).toEqual(applied);
    expect((await readState(dataDir, VM)).appliedLsn).toBe(w.lastLsn);
  });

  it('shows initial-copy progress, then resets and resyncs on a new generation', async () => {
    const { dataDir, fake, processor } = await setup();
    const total = DISKS[0]!.size;
    const w = new Workload(DISKS, 5);
    const slices = 8;
    // As the agent sends its initial copy: each chunk, then a SYNC marker, the batch carrying its progress.
    for (let i = 0; i < slices; i++) {
      w.write(0, (i * total) / slices, total / slices);
      w.sync(((i + 1) * total) / slices);
    }
    const { s } = await streaming(fake, 0, VM, 'g1', w);
    const send = (i: number): Promise<void> =>
      s.batch(VM, 'g1', w.range(2 * i + 1, 2 * i + 2), { done: ((i + 1) * total) / slices, total });
    for (let i = 0; i < slices / 2; i++) await send(i);
    const half = await until('half-way progress', async () => {
      const v = await vmStatus(processor.listen, VM);
      return v.appliedLsn === slices ? v : undefined;
    });
    expect(half.initialSync).toEqual({ state: 'copying', done: total / 2, total, percent: 50 });
    expect(half.state).toBe('resyncing');
    await s.appliedAtLeast(VM, slices);
    expect((await readState(dataDir, VM)).initialSync).toMatchObject({ state: 'copying', done: total / 2 });

    for (let i = slices / 2; i < slices; i++) await send(i);
    await s.appliedAtLeast(VM, 2 * slices);
    const done = await vmStatus(processor.listen, VM);
    expect(done.initialSync).toEqual({ state: 'done', done: total, total, percent: 100 });
    expect(done.state).toBe('replicating');
    expect((await readState(dataDir, VM)).initialSync.state).toBe('done');
    expectImages(await replicaBytes(dataDir, VM, DISKS), w.images);

    // The source lost continuity: generation g2, same disks. The processor subscribes with what it has.
    expect(await vmStatus(processor.listen, VM)).toMatchObject({ appliedLsn: 2 * slices, pendingRecords: 0 });
    s.vms([{ vm: VM, generation: 'g2', disks: DISKS, firstLsn: 1, lastLsn: 2 }]);
    const resub = await s.waitFor((m) => m.t === 'subscribe' && m['generation'] === 'g1');
    expect(resub).toMatchObject({ vm: VM, generation: 'g1', from: 2 * slices + 1 });
    s.stream(VM, 'g2', DISKS, 1);
    const g2 = new Workload(DISKS, 6);
    g2.write(1, 0, 64 * 1024);
    g2.write(1, MiB, 64 * 1024);
    await s.batch(VM, 'g2', g2.range(1, 1), { done: 1, total: 4 });
    await s.appliedAtLeast(VM, 1, 'g2');
    const resync = await until('the g2 stream in status', async () => {
      const v = await vmStatus(processor.listen, VM);
      return v.generation === 'g2' && v.appliedLsn === 1 ? v : undefined;
    });
    expect(resync).toMatchObject({
      state: 'resyncing',
      initialSync: { state: 'copying', done: 1, total: 4, percent: 25 },
    });
    await until('g2 persisted', async () => ((await readState(dataDir, VM)).generation === 'g2' ? true : undefined));
    expect(await readState(dataDir, VM)).toMatchObject({
      generation: 'g2',
      appliedLsn: 1,
      initialSync: { state: 'copying' },
    });
    expect(
      fake
        .applied(VM)
        .filter((m) => m['generation'] === 'g2')
        .every((m) => (m['lsn'] as number) <= 2),
    ).toBe(true);
    await s.batch(VM, 'g2', g2.range(2, 2), { done: 4, total: 4 });
    await until('g2 fully applied', async () =>
      (await vmStatus(processor.listen, VM)).appliedLsn === 2 ? true : undefined,
    );
    // A new generation's copy sends only non-zero chunks, so nothing of g1 may remain under it.
    expectImages(await replicaBytes(dataDir, VM, DISKS), g2.images);
    expect((await vmStatus(processor.listen, VM)).state).toBe('replicating');

    // Generation g3 with another disk layout: the replica is recreated with the new sizes.
    const disks3: DiskInfo[] = [{ id: 'os', size: 2 * MiB }];
    s.vms([{ vm: VM, generation: 'g3', disks: disks3, firstLsn: 1, lastLsn: 1 }]);
    await s.waitFor((m) => m.t === 'subscribe' && m['generation'] === 'g2');
    s.stream(VM, 'g3', disks3, 1);
    const g3 = new Workload(disks3, 8);
    g3.write(0, 4096, 4096);
    await s.batch(VM, 'g3', g3.range(1, 1));
    await s.waitFor((m) => m.t === 'applied' && m['generation'] === 'g3');
    expectImages(await replicaBytes(dataDir, VM, disks3), g3.images);
    expect(fs.existsSync(replicaFile(dataDir, VM, 'data'))).toBe(false);
    expect(await readState(dataDir, VM)).toMatchObject({ generation: 'g3', disks: disks3, appliedLsn: 1 });
  });

  it('reports a cache-store error in status and reconnects', async () => {
    const { fake, processor } = await setup();
    const s0 = await fake.session(0);
    await s0.waitFor((m) => m.t === 'hello');
    s0.ws.send(encodeMessage({ t: 'error', code: 'SR_AUTH', message: 'credential refused' }));
    s0.ws.close(1008, 'auth');
    const s1 = await fake.session(1);
    await s1.waitFor((m) => m.t === 'hello');
    const status = await getJson<{ cacheStore: { lastError?: { code: string }; reconnects: number } }>(
      processor.listen,
      '/status',
    );
    expect(status.cacheStore.lastError?.code).toBe('SR_AUTH');
    expect(status.cacheStore.reconnects).toBeGreaterThanOrEqual(1);
  });

  it('replicates several VMs over one connection', async () => {
    const { dataDir, fake } = await setup();
    const a = new Workload(DISKS, 21);
    const b = new Workload([{ id: 'root', size: 2 * MiB }], 22);
    a.random(200, 64 * 1024);
    b.random(200, 64 * 1024);
    const s = await fake.listed(0, [
      { vm: 'vm-a', generation: 'ga', disks: a.disks, firstLsn: 1, lastLsn: a.lastLsn },
      { vm: 'vm-b', generation: 'gb', disks: b.disks, firstLsn: 1, lastLsn: b.lastLsn },
    ]);
    await s.subscribeOf('vm-a');
    await s.subscribeOf('vm-b');
    s.stream('vm-a', 'ga', a.disks, 1);
    s.stream('vm-b', 'gb', b.disks, 1);
    const ca = chunks(a.records, 16);
    const cb = chunks(b.records, 16);
    for (let i = 0; i < Math.max(ca.length, cb.length); i++) {
      if (ca[i]) await s.batch('vm-a', 'ga', ca[i]!);
      if (cb[i]) await s.batch('vm-b', 'gb', cb[i]!);
    }
    await s.appliedAtLeast('vm-a', a.lastLsn);
    await s.appliedAtLeast('vm-b', b.lastLsn);
    expectImages(await replicaBytes(dataDir, 'vm-a', a.disks), a.images);
    expectImages(await replicaBytes(dataDir, 'vm-b', b.disks), b.images);
  });
});
