import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { agentHello, batchFrame, batches, eventually, within, type Message } from '../helpers.js';
import { expectError, receiveThrough, startServer, useServers } from './server-harness.js';
import { metaFile, vmDir } from '../../src/names.js';

const { server, connect, agent, processor } = useServers();

describe('stream hub: one agent per VM, generations', () => {
  it('a second agent connection for the VM replaces the first', async () => {
    const s = await server();
    const a = await agent(s);
    for (const b of await batches('vm1', 'g1', 1, 3)) a.peer.send(b.frame);
    await a.peer.ackedThrough(12);
    const b = await agent(s);
    expect(b.durableLsn).toBe(12);
    expect((await a.peer.closed).code).toBe(4001);
    b.peer.send(await batchFrame('vm1', 'g1', 13, 1));
    expect(await b.peer.ackedThrough(13)).toBe(13);
  });

  it('a new generation replaces the stream: welcome 0, old records gone, processors told', async () => {
    const s = await server();
    const a = await agent(s);
    for (const b of await batches('vm1', 'g1', 1, 5)) a.peer.send(b.frame);
    await a.peer.ackedThrough(20);
    const proc = await processor(s);
    expect(proc.vms).toEqual([expect.objectContaining({ vm: 'vm1', generation: 'g1', firstLsn: 1, lastLsn: 20 })]);
    proc.peer.send({ t: 'subscribe', vm: 'vm1', generation: 'g1', from: 21 });
    expect(await proc.peer.expect('stream')).toMatchObject({ vm: 'vm1', generation: 'g1', from: 21 });
    const b = await agent(s, 'vm1', 'g2');
    expect(b.durableLsn).toBe(0);
    const vms = await proc.peer.expect('vms');
    expect(vms.vms).toEqual([expect.objectContaining({ vm: 'vm1', generation: 'g2', firstLsn: 1, lastLsn: 0 })]);
    expect(await proc.peer.expect('stream')).toMatchObject({ vm: 'vm1', generation: 'g2', from: 1 });
    const f = await batchFrame('vm1', 'g2', 1, 2);
    b.peer.send(f);
    expect((await proc.peer.recvRaw()).equals(f)).toBe(true);
    expect((await s.status()).vms[0]).toMatchObject({ generation: 'g2', durableLsn: 2 });
  });
  it('a subscription to a VM not yet held starts once the agent shows up', async () => {
    const s = await server();
    const proc = await processor(s);
    expect(proc.vms).toEqual([]);
    proc.peer.send({ t: 'subscribe', vm: 'later', generation: null, from: 1 });
    const a = await agent(s, 'later', 'g1');
    expect((await proc.peer.expect('vms')).vms.map((v) => v.vm)).toEqual(['later']);
    expect(await proc.peer.expect('stream')).toMatchObject({ vm: 'later', generation: 'g1', from: 1 });
    const f = await batchFrame('later', 'g1', 1, 3);
    a.peer.send(f);
    expect((await proc.peer.recvRaw()).equals(f)).toBe(true);
  });

  it('racing generation switches run one at a time: the last agent wins, processors hear vms before each stream', async () => {
    const s = await server();
    const first = await agent(s, 'vm1', 'g1');
    const proc = await processor(s);
    proc.peer.send({ t: 'subscribe', vm: 'vm1', generation: 'g1', from: 1 });
    await proc.peer.expect('stream');
    const b = await connect(s);
    const c = await connect(s);
    b.send(agentHello('vm1', 'g2'));
    c.send(agentHello('vm1', 'g3'));
    expect((await first.peer.closed).code).toBe(4001);
    // The one attached last is the writer; the other is replaced (welcomed first or not).
    // ws gives a close handshake 30 s; a replaced connection must not need it.
    const loser = await within(
      Promise.race([b.closed.then(() => b), c.closed.then(() => c)]),
      10_000,
      'the close of the replaced agent',
    );
    expect((await loser.closed).code).toBe(4001);
    const winner = loser === b ? { p: c, gen: 'g3' } : { p: b, gen: 'g2' };
    expect(await winner.p.expect('welcome')).toMatchObject({ durableLsn: 0 });
    expect((await s.status()).vms[0]).toMatchObject({ generation: winner.gen, durableLsn: 0 });
    // Every stream is announced by a vms naming its generation first; the last one is the winner's.
    const seen: Message[] = [];
    while (!seen.some((m) => m.t === 'stream' && m.generation === winner.gen)) seen.push(await proc.peer.recv());
    seen.forEach((m, i) => {
      if (m.t !== 'stream') return;
      const before = seen[i - 1];
      expect(before?.t).toBe('vms');
      if (before?.t === 'vms') expect(before.vms[0]!.generation).toBe(m.generation);
    });
    const f = await batchFrame('vm1', winner.gen, 1, 2);
    winner.p.send(f);
    expect(await winner.p.ackedThrough(2)).toBe(2);
    expect((await proc.peer.recvRaw()).equals(f)).toBe(true);
  });

  it('welcomes a replacing agent exactly at what is durable, whatever the replaced one left in flight', async () => {
    const s = await server();
    const a = await agent(s);
    const sent = await batches('vm1', 'g1', 1, 50);
    for (const bt of sent) a.peer.send(bt.frame); // no waiting for acks: some are still on their way
    const b = await agent(s);
    expect((await a.peer.closed).code).toBe(4001);
    const d = b.durableLsn;
    expect(d % 4).toBe(0);
    // Exactly the batches through d are held: a processor gets them, and b goes on at d + 1.
    const proc = await processor(s);
    expect(proc.vms[0]).toMatchObject({ lastLsn: d });
    const more = await batchFrame('vm1', 'g1', d + 1, 4);
    b.peer.send(more);
    expect(await b.peer.ackedThrough(d + 4)).toBe(d + 4);
    proc.peer.send({ t: 'subscribe', vm: 'vm1', generation: 'g1', from: 1 });
    await proc.peer.expect('stream');
    const got = await receiveThrough(proc.peer, d + 4);
    expect(got.length).toBe(d / 4 + 1);
    got.slice(0, -1).forEach((g, i) => expect(g.equals(sent[i]!.frame), `batch ${i}`).toBe(true));
    expect(got[got.length - 1]!.equals(more)).toBe(true);
  });

  it('relays a policy set before the agent came after its welcome, and later ones at once', async () => {
    const s = await server();
    const proc = await processor(s);
    proc.peer.send({ t: 'subscribe', vm: 'later', generation: null, from: 1 });
    proc.peer.send({ t: 'policy', vm: 'later', appConsistentFrequencyMs: 60_000 });
    proc.peer.send({ t: 'policy', vm: 'nobody', appConsistentFrequencyMs: 1000 }); // not tracked: no state
    const a = await agent(s, 'later');
    expect(await a.peer.expect('policy')).toMatchObject({ vm: 'later', appConsistentFrequencyMs: 60_000 });
    proc.peer.send({ t: 'policy', vm: 'later', appConsistentFrequencyMs: 30_000 });
    expect(await a.peer.expect('policy')).toMatchObject({ appConsistentFrequencyMs: 30_000 });
    expect((await s.status()).trackedVms).toBe(1);
  });
});

describe('stream hub: maxVms', () => {
  it('refuses VM N+1 with SR_LIMIT and stores nothing for it; the VMs it holds go on', async () => {
    const s = await server({ limits: { maxVms: 2 } });
    const a = await agent(s, 'a');
    await agent(s, 'b');
    const c = await connect(s);
    c.send(agentHello('c', 'g1'));
    expect(await expectError(c, 'SR_LIMIT')).toMatch(/"c".*2 VMs.*--max-vms/);
    await expect(fs.stat(vmDir(s.dataDir, 'c'))).rejects.toMatchObject({ code: 'ENOENT' });
    const st = await s.status();
    expect(st.vms.map((v) => v['vm'])).toEqual(['a', 'b']);
    expect(st).toMatchObject({ trackedVms: 2, maxVms: 2 });
    // A processor naming a third VM is refused too; one naming a held VM is served.
    const p = await processor(s);
    p.peer.send({ t: 'subscribe', vm: 'd', generation: null, from: 1 });
    await expectError(p.peer, 'SR_LIMIT');
    const q = await processor(s);
    q.peer.send({ t: 'subscribe', vm: 'a', generation: 'g1', from: 1 });
    expect(await q.peer.expect('stream')).toMatchObject({ vm: 'a' });
    // A VM already held is not new: its agent reconnects at the limit.
    a.peer.send(await batchFrame('a', 'g1', 1, 2));
    await a.peer.ackedThrough(2);
    const again = await agent(s, 'a');
    expect(again.durableLsn).toBe(2);
    expect((await s.status()).trackedVms).toBe(2);
  });

  it('forgets VMs nothing holds any more: waiting subscriptions, refused agents, gone processors', async () => {
    // A VM whose meta file is damaged is set aside at open; its agent is refused after it was attached.
    const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'sr-cs-hub-'));
    await fs.mkdir(vmDir(dataDir, 'dmg'), { recursive: true });
    await fs.writeFile(metaFile(vmDir(dataDir, 'dmg')), '{"version":1,');
    const s = await server({ dataDir, limits: { maxVms: 3 } });
    expect((await s.status()).trackedVms).toBe(0);
    const stale = await connect(s);
    stale.send(agentHello('dmg', 'g1'));
    await expectError(stale, 'SR_JOURNAL_CORRUPT');
    expect((await s.status()).trackedVms).toBe(0);

    const p = await processor(s);
    for (const vm of ['w1', 'w2', 'w3']) p.peer.send({ t: 'subscribe', vm, generation: null, from: 1 });
    // Subscriptions are handled in order, so a refusal of a 4th VM means all three are tracked.
    const probe = await connect(s);
    probe.send(agentHello('x', 'g1'));
    await expectError(probe, 'SR_LIMIT');
    expect((await s.status()).trackedVms).toBe(3);
    // Resubscribing the same VMs is not more VMs.
    for (const vm of ['w1', 'w2', 'w3']) p.peer.send({ t: 'subscribe', vm, generation: null, from: 1 });
    p.peer.close();
    await p.peer.closed;
    await eventually(async () => (await s.status()).trackedVms === 0, 5000, "the gone processor's VMs forgotten");
    expect((await agent(s, 'x')).durableLsn).toBe(0);
    expect((await s.status()).trackedVms).toBe(1); // x has a stored stream now: it stays
  });
});

describe('stream hub: replication groups', () => {
  it("lists the hello's group to processors, keeps it across a restart, and relays every policy field", async () => {
    const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'sr-cs-group-'));
    let s = await startServer({ dataDir });
    try {
      const proc = await processor(s);
      proc.peer.send({ t: 'subscribe', vm: 'web', generation: null, from: 1 });
      // Set before the agent came: it waits for the welcome, and goes whole.
      proc.peer.send({ t: 'policy', vm: 'web', appConsistentFrequencyMs: 60_000, multiVmFrequencyMs: 5000 });
      const a = await connect(s);
      a.send({ ...agentHello('web', 'g1'), group: 'erp' });
      await a.expect('welcome');
      expect(await a.expect('policy')).toEqual({
        t: 'policy',
        vm: 'web',
        appConsistentFrequencyMs: 60_000,
        multiVmFrequencyMs: 5000,
      });
      let listed: Message;
      do listed = await proc.peer.recv();
      while (listed.t !== 'vms' || listed.vms[0]?.group !== 'erp');
      expect((await s.status()).vms[0]).toMatchObject({ vm: 'web', group: 'erp' });
      proc.peer.send({ t: 'policy', vm: 'web', appConsistentFrequencyMs: 0, multiVmFrequencyMs: 2000 });
      expect(await a.expect('policy')).toMatchObject({ appConsistentFrequencyMs: 0, multiVmFrequencyMs: 2000 });
      a.close();
      await a.closed;
      await s.stop();

      // The agent is away: the group comes from what the cache-store kept with the VM's log.
      s = await startServer({ dataDir });
      const again = await processor(s);
      expect(again.vms).toEqual([expect.objectContaining({ vm: 'web', group: 'erp' })]);
      // The agent comes back out of the group: processors hear it.
      await agent(s, 'web', 'g1');
      let left: Message;
      do left = await again.peer.recv();
      while (left.t !== 'vms');
      expect(left.vms[0]).toMatchObject({ vm: 'web' });
      expect(left.vms[0]!.group).toBeUndefined();
    } finally {
      await s.stop();
      await fs.rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe("stream hub: the agent's mode", () => {
  it('lists a watch-mode hello to processors and keeps it across a restart while the agent is away', async () => {
    const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'sr-cs-mode-'));
    let s = await startServer({ dataDir });
    try {
      const proc = await processor(s);
      const a = await connect(s);
      a.send({ ...agentHello('img', 'g1'), mode: 'watch' });
      await a.expect('welcome');
      let listed: Message;
      do listed = await proc.peer.recv();
      while (listed.t !== 'vms' || listed.vms[0]?.mode !== 'watch');
      expect((await s.status()).vms[0]).toMatchObject({ vm: 'img', mode: 'watch' });
      a.close();
      await a.closed;
      await s.stop();
      s = await startServer({ dataDir });
      const again = await processor(s);
      expect(again.vms).toEqual([expect.objectContaining({ vm: 'img', mode: 'watch' })]);
    } finally {
      await s.stop();
      await fs.rm(dataDir, { recursive: true, force: true });
    }
  });
});
