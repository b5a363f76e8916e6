import fs from 'node:fs';
import path from 'node:path';
import type { DiskInfo } from '@site-recovery/shared';
import { describe, expect, it } from 'vitest';
import { FileReplicaStore } from '../../src/replica/file-replica-store.js';
import { useProcessorCases } from '../processor-cases.js';
import { Workload, chunks } from '../workload.js';
import { MiB, expectImages, getJson, readState, replicaBytes, replicaFile, until, vmStatus } from '../helpers.js';
import { DISKS, VM } from './stream-vm.js';

const cases = useProcessorCases('processor');

describe('processor applying a stream from the cache-store', () => {
  it('applies writes, zeroes and trims so the replica equals the source image, skipping records it already holds', async () => {
    const w = new Workload(DISKS, 12345);
    w.fill(0, 0, DISKS[0]!.size, 0x5a); // whole disk, compressible: travels lz4
    w.random(600, 256 * 1024);
    w.zero(1, 0, DISKS[1]!.size);
    w.random(300, 64 * 1024);
    w.trim(0, 4096, 8 * MiB);
    w.random(100, 4096);
    // As after a crash that persisted a position inside a batch: the replica holds records 1..30,
    // while the cache-store's first frame spans 1..50, so it comes again from before that position.
    const { dataDir, cs, processor } = await cases.start({
      prepare: async (dataDir, cs) => {
        const r = await new FileReplicaStore(dataDir).create(VM, 'g1', DISKS);
        for (const rec of w.range(1, 30)) await r.apply(rec);
        await r.flush();
        await r.savePosition({ appliedLsn: 30, initialSync: { state: 'copying', done: 0, total: 0 } });
        await r.close();
        const agent = await cs.agent(VM, 'g1', DISKS);
        await agent.send(w.range(1, 50));
        for (const c of chunks(w.range(51, w.lastLsn), 37)) await agent.send(c);
        await agent.ackedThrough(w.lastLsn);
      },
    });
    const s = await cs.tap.session(0);
    expect(await s.subscribeOf(VM)).toMatchObject({ t: 'subscribe', vm: VM, generation: 'g1', from: 31 });
    await cs.tap.confirmedAtLeast(VM, w.lastLsn);
    expect(s.toProcessor.find((m) => m.t === 'batch')).toMatchObject({ vm: VM, first: 1, last: 50 });
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
    expect(s.fromProcessor.filter((m) => m.t === 'invalid' || m.t === 'error')).toEqual([]);
    const health = await getJson<{ ok: boolean; cacheStore: { connected: boolean } }>(processor.listen, '/health');
    expect(health).toMatchObject({ ok: true, cacheStore: { connected: true } });
    const status = await getJson<{ cacheStore: { url: string; connected: boolean } }>(processor.listen, '/status');
    expect(status.cacheStore).toMatchObject({ url: cs.url, connected: true });
    // The confirmation reached the cache-store, which may now drop everything it held for the VM.
    await until('the cache-store to record the confirmation', () =>
      cs.status().vms.find((v) => v.vm === VM)?.appliedLsn === w.lastLsn ? true : undefined,
    );
  });

  it('confirms only positions that are already persisted, in rounds rather than per batch', async () => {
    const { dataDir, cs } = await cases.start();
    const w = new Workload(DISKS, 99);
    w.random(3000, 16 * 1024);
    const violations: string[] = [];
    cs.tap.onFromProcessor = (m) => {
      if (m.t !== 'applied') return;
      // Read synchronously on arrival: the state on disk must already cover what is confirmed.
      const state = JSON.parse(fs.readFileSync(path.join(dataDir, 'replicas', VM, 'state.json'), 'utf8')) as {
        appliedLsn: number;
        generation: string;
      };
      if (state.appliedLsn < (m['lsn'] as number) || state.generation !== m['generation'])
        violations.push(`confirmed ${String(m['lsn'])}, persisted ${state.appliedLsn}`);
    };
    const agent = await cs.agent(VM, 'g1', DISKS);
    const batches = chunks(w.records, 10);
    for (const c of batches) await agent.send(c);
    await cs.tap.confirmedAtLeast(VM, w.lastLsn);
    const applied = cs.tap.applied(VM).map((m) => m['lsn'] as number);
    expect(violations).toEqual([]);
    expect(applied.length).toBeGreaterThan(0);
    expect(applied.length).toBeLessThan(batches.length / 3);
    expect([...applied].sort((a, b) => a - b)).toEqual(applied);
    expect((await readState(dataDir, VM)).appliedLsn).toBe(w.lastLsn);
  });

  it('shows initial-copy progress, then starts over on a new generation on top of the replica it keeps', async () => {
    const { dataDir, cs, processor } = await cases.start();
    const total = DISKS[0]!.size;
    const w = new Workload(DISKS, 5);
    const slices = 8;
    // As the agent sends its initial copy: each chunk, then a SYNC marker, the batch carrying its progress.
    for (let i = 0; i < slices; i++) {
      w.write(0, (i * total) / slices, total / slices);
      w.sync(((i + 1) * total) / slices);
    }
    const agent = await cs.agent(VM, 'g1', DISKS);
    const send = (i: number): Promise<void> =>
      agent.send(w.range(2 * i + 1, 2 * i + 2), { done: ((i + 1) * total) / slices, total });
    for (let i = 0; i < slices / 2; i++) await send(i);
    const half = await until('half-way progress', async () => {
      const v = await vmStatus(processor.listen, VM);
      return v.appliedLsn === slices ? v : undefined;
    });
    expect(half.initialSync).toEqual({ state: 'copying', done: total / 2, total, percent: 50 });
    expect(half.state).toBe('resyncing');
    await cs.tap.confirmedAtLeast(VM, slices);
    expect((await readState(dataDir, VM)).initialSync).toMatchObject({ state: 'copying', done: total / 2 });

    for (let i = slices / 2; i < slices; i++) await send(i);
    await cs.tap.confirmedAtLeast(VM, 2 * slices);
    const done = await vmStatus(processor.listen, VM);
    expect(done.initialSync).toEqual({ state: 'done', done: total, total, percent: 100 });
    expect(done.state).toBe('replicating');
    expect((await readState(dataDir, VM)).initialSync.state).toBe('done');
    expectImages(await replicaBytes(dataDir, VM, DISKS), w.images);

    // The source lost continuity: generation g2, same disks. The processor subscribes with what it has.
    expect(await vmStatus(processor.listen, VM)).toMatchObject({ appliedLsn: 2 * slices, pendingRecords: 0 });
    const s = await cs.tap.session(0);
    const agent2 = await cs.agent(VM, 'g2', DISKS);
    const resub = await s.waitFor(
      'a subscription from the g1 position',
      (m) => m.t === 'subscribe' && m['generation'] === 'g1',
    );
    expect(resub).toMatchObject({ vm: VM, generation: 'g1', from: 2 * slices + 1 });
    const g2 = new Workload(DISKS, 6);
    g2.write(1, 0, 64 * 1024);
    // A new generation's copy sends the chunks it cannot skip by sums: the zero ones as ZERO records.
    g2.zero(0, 0, DISKS[0]!.size);
    g2.zero(1, 64 * 1024, DISKS[1]!.size - 64 * 1024);
    await agent2.send(g2.range(1, 1), { done: 1, total: 4 });
    await cs.tap.confirmedAtLeast(VM, 1, 'g2');
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
    expect(cs.tap.confirmed(VM, 'g2')).toBeLessThanOrEqual(1);
    // Same layout: g1's data stays under g2 (the base of its checksum resync) until g2's records overwrite it.
    const kept = await replicaBytes(dataDir, VM, DISKS);
    expect(kept[0]!.equals(w.images[0]!)).toBe(true);
    await agent2.send(g2.range(2, 3), { done: 4, total: 4 });
    await until('g2 fully applied', async () =>
      (await vmStatus(processor.listen, VM)).appliedLsn === 3 ? true : undefined,
    );
    expectImages(await replicaBytes(dataDir, VM, DISKS), g2.images);
    expect((await vmStatus(processor.listen, VM)).state).toBe('replicating');

    // Generation g3 with another disk layout: the replica is recreated with the new sizes.
    const disks3: DiskInfo[] = [{ id: 'os', size: 2 * MiB }];
    const agent3 = await cs.agent(VM, 'g3', disks3);
    await s.waitFor('a subscription from the g2 position', (m) => m.t === 'subscribe' && m['generation'] === 'g2');
    const g3 = new Workload(disks3, 8);
    g3.write(0, 4096, 4096);
    await agent3.send(g3.range(1, 1));
    await cs.tap.confirmedAtLeast(VM, 1, 'g3');
    expectImages(await replicaBytes(dataDir, VM, disks3), g3.images);
    expect(fs.existsSync(replicaFile(dataDir, VM, 'data'))).toBe(false);
    expect(await readState(dataDir, VM)).toMatchObject({ generation: 'g3', disks: disks3, appliedLsn: 1 });
  });

  it('replicates several VMs over one connection', async () => {
    const { dataDir, cs } = await cases.start();
    const a = new Workload(DISKS, 21);
    const b = new Workload([{ id: 'root', size: 2 * MiB }], 22);
    a.random(200, 64 * 1024);
    b.random(200, 64 * 1024);
    const agentA = await cs.agent('vm-a', 'ga', a.disks);
    const agentB = await cs.agent('vm-b', 'gb', b.disks);
    const ca = chunks(a.records, 16);
    const cb = chunks(b.records, 16);
    for (let i = 0; i < Math.max(ca.length, cb.length); i++) {
      if (ca[i]) await agentA.send(ca[i]!);
      if (cb[i]) await agentB.send(cb[i]!);
    }
    await cs.tap.confirmedAtLeast('vm-a', a.lastLsn);
    await cs.tap.confirmedAtLeast('vm-b', b.lastLsn);
    expectImages(await replicaBytes(dataDir, 'vm-a', a.disks), a.images);
    expectImages(await replicaBytes(dataDir, 'vm-b', b.disks), b.images);
    expect(cs.tap.sessions).toHaveLength(1);
    // A processor with no replica yet asks for each stream from its start.
    const s = cs.tap.sessions[0]!;
    expect(await s.subscribeOf('vm-a')).toMatchObject({ generation: null, from: 1 });
    expect(await s.subscribeOf('vm-b')).toMatchObject({ generation: null, from: 1 });
  });
});
