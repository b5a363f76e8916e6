import fs from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { batchFrame, batches, eventually } from '../helpers.js';
import { expectError, receiveThrough, useServers } from './server-harness.js';
import { vmDir } from '../../src/names.js';

const { server, agent, processor } = useServers();

describe('processor sessions', () => {
  it('serves durable batches byte for byte from a given LSN, then tails new ones', async () => {
    const s = await server({ store: { segmentBytes: 64 * 1024 } });
    const a = await agent(s);
    const sent = await batches('vm1', 'g1', 1, 40); // 40 x 16 KiB over several segments
    for (const b of sent) a.peer.send(b.frame);
    await a.peer.ackedThrough(160);
    const proc = await processor(s);
    expect(proc.vms).toEqual([
      { vm: 'vm1', generation: 'g1', disks: expect.any(Array) as unknown, firstLsn: 1, lastLsn: 160 },
    ]);
    proc.peer.send({ t: 'subscribe', vm: 'vm1', generation: 'g1', from: 50 }); // inside the batch 49..52
    expect(await proc.peer.expect('stream')).toMatchObject({
      vm: 'vm1',
      generation: 'g1',
      from: 50,
      disks: [{ id: 'os' }, { id: 'data' }],
    });
    const got = await receiveThrough(proc.peer, 160);
    expect(got.length).toBe(28);
    got.forEach((g, i) => expect(g.equals(sent[12 + i]!.frame)).toBe(true));
    const more = await batches('vm1', 'g1', 161, 10);
    for (const b of more) a.peer.send(b.frame);
    const tail = await receiveThrough(proc.peer, 200);
    tail.forEach((g, i) => expect(g.equals(more[i]!.frame)).toBe(true));
    expect((await s.status()).vms[0]).toMatchObject({ processorSubscribed: true, agentConnected: true });
  });

  it('streams from the start of the current generation to a processor of another (or no) generation', async () => {
    const s = await server();
    const a = await agent(s);
    const sent = await batches('vm1', 'g1', 1, 3);
    for (const b of sent) a.peer.send(b.frame);
    await a.peer.ackedThrough(12);
    const proc = await processor(s);
    proc.peer.send({ t: 'subscribe', vm: 'vm1', generation: 'g0', from: 500 });
    expect(await proc.peer.expect('stream')).toMatchObject({ generation: 'g1', from: 1 });
    const got = await receiveThrough(proc.peer, 12);
    got.forEach((g, i) => expect(g.equals(sent[i]!.frame)).toBe(true));
    const p2 = await processor(s);
    p2.peer.send({ t: 'subscribe', vm: 'vm1', generation: null, from: 1 });
    expect(await p2.peer.expect('stream')).toMatchObject({ generation: 'g1', from: 1 });
  });

  it('applied deletes wholly applied segments; asking for them afterwards is SR_SEQUENCE', async () => {
    const s = await server({ store: { segmentBytes: 32 * 1024 } });
    const a = await agent(s);
    for (const b of await batches('vm1', 'g1', 1, 30)) a.peer.send(b.frame); // 30 x 16 KiB: ~15 segments
    await a.peer.ackedThrough(120);
    const segs = async (): Promise<number> =>
      (await fs.readdir(vmDir(s.dataDir, 'vm1'))).filter((n) => n.endsWith('.srs')).length;
    const before = await segs();
    expect(before).toBeGreaterThan(10);
    expect((await s.status()).vms[0]!['segments']).toBe(before);
    const proc = await processor(s);
    proc.peer.send({ t: 'applied', vm: 'vm1', generation: 'g1', lsn: 100 });
    const settled = async (): Promise<boolean> => {
      const st = (await s.status()).vms[0]!;
      return st['segments'] === (await segs()) && st['appliedLsn'] === 100;
    };
    await eventually(async () => (await segs()) < before - 5 && (await settled()), 5000, 'segments deleted');
    const st = (await s.status()).vms[0]!;
    expect(st['firstLsn'] as number).toBeGreaterThan(1);
    expect(st['firstLsn'] as number).toBeLessThanOrEqual(101);
    const meta = JSON.parse(await fs.readFile(`${vmDir(s.dataDir, 'vm1')}/meta.json`, 'utf8')) as {
      appliedLsn: number;
    };
    expect(meta.appliedLsn).toBe(100);
    proc.peer.send({ t: 'applied', vm: 'vm1', generation: 'g1', lsn: 120 }); // all: the newest segment stays
    await eventually(async () => (await segs()) === 1, 5000, 'all but the newest deleted');
    const late = await processor(s);
    late.peer.send({ t: 'subscribe', vm: 'vm1', generation: 'g1', from: 1 });
    expect(await expectError(late.peer, 'SR_SEQUENCE')).toMatch(/no longer held/);
  });

  it('refuses applied past the durable LSN, and subscribe past it, with SR_SEQUENCE', async () => {
    const s = await server();
    const a = await agent(s);
    a.peer.send(await batchFrame('vm1', 'g1', 1, 2));
    await a.peer.ackedThrough(2);
    const p = await processor(s);
    p.peer.send({ t: 'applied', vm: 'vm1', generation: 'g1', lsn: 3 });
    await expectError(p.peer, 'SR_SEQUENCE');
    const q = await processor(s);
    q.peer.send({ t: 'subscribe', vm: 'vm1', generation: 'g1', from: 4 });
    await expectError(q.peer, 'SR_SEQUENCE');
  });

  it('rejects messages a processor does not send', async () => {
    const s = await server();
    const p = await processor(s);
    p.peer.send(await batchFrame('vm1', 'g1', 1, 1));
    await expectError(p.peer, 'SR_PROTOCOL');
  });

  it('holds back a processor that does not read and delivers everything in order once it does', async () => {
    const s = await server({ limits: { maxBufferedBytes: 256 * 1024 } });
    const a = await agent(s);
    const proc = await processor(s);
    proc.peer.send({ t: 'subscribe', vm: 'vm1', generation: null, from: 1 });
    expect(await proc.peer.expect('stream')).toMatchObject({ from: 1 });
    proc.peer.ws.pause(); // stop reading: the kernel buffers fill, then the server's send buffer
    const sent = await batches('vm1', 'g1', 1, 200, 4, 16 * 1024); // 200 x 64 KiB = 12.5 MiB
    for (const b of sent) a.peer.send(b.frame);
    await a.peer.ackedThrough(800);
    await new Promise((r) => setTimeout(r, 300));
    proc.peer.ws.resume();
    const got = await receiveThrough(proc.peer, 800);
    expect(got.length).toBe(200);
    got.forEach((g, i) => expect(g.equals(sent[i]!.frame), `batch ${i}`).toBe(true));
  });
});
