import fs from 'node:fs/promises';
import { BatchSchema, decodeMessage, encodeMessage, lastLsn } from '@site-recovery/shared';
import { afterEach, describe, expect, it } from 'vitest';
import { Peer, PROCESSOR_HELLO, agentHello, batchFrame, batches, eventually } from '../helpers.js';
import { GatedStore, startServer, type RunningServer } from './server-harness.js';
import { vmDir } from '../../src/names.js';

const running: RunningServer[] = [];
const peers: Peer[] = [];
afterEach(async () => {
  peers.splice(0).forEach((p) => p.close());
  for (const s of running.splice(0)) {
    await s.stop();
    await fs.rm(s.dataDir, { recursive: true, force: true });
  }
});

async function server(o: Parameters<typeof startServer>[0] = {}): Promise<RunningServer> {
  const s = await startServer(o);
  running.push(s);
  return s;
}

async function connect(s: RunningServer): Promise<Peer> {
  const p = await Peer.open(s.url);
  peers.push(p);
  return p;
}

/** An agent connection that said hello and got its welcome. */
async function agent(s: RunningServer, vm = 'vm1', generation = 'g1'): Promise<{ peer: Peer; durableLsn: number }> {
  const peer = await connect(s);
  peer.send(agentHello(vm, generation));
  const w = await peer.expect('welcome');
  return { peer, durableLsn: w.durableLsn };
}

async function processor(
  s: RunningServer,
): Promise<{ peer: Peer; vms: { vm: string; generation: string; firstLsn: number; lastLsn: number }[] }> {
  const peer = await connect(s);
  peer.send(PROCESSOR_HELLO);
  const m = await peer.expect('vms');
  return { peer, vms: m.vms };
}

/** Expects an error message with `code`, then the close. */
async function expectError(p: Peer, code: string): Promise<string> {
  const m = await p.expect('error');
  expect(m.code).toBe(code);
  const closed = await p.closed;
  expect(closed.code).not.toBe(1000);
  return m.message;
}

/** Receives batches until one reaches `last`; returns them as raw frames. */
async function receiveThrough(p: Peer, last: number): Promise<Buffer[]> {
  const out: Buffer[] = [];
  let reached = 0;
  while (reached < last) {
    const raw = await p.recvRaw();
    reached = lastLsn(decodeMessage(raw, BatchSchema));
    out.push(raw);
  }
  return out;
}

describe('cache-store server: agents', () => {
  it('welcomes a new VM with durableLsn 0, acks batches cumulatively, and shows the VM in /status', async () => {
    const s = await server();
    const { peer, durableLsn } = await agent(s);
    expect(durableLsn).toBe(0);
    const bs = await batches('vm1', 'g1', 1, 20);
    for (const b of bs) peer.send(b.frame);
    expect(await peer.ackedThrough(80)).toBe(80);
    const st = await s.status();
    expect(st.vms).toEqual([
      expect.objectContaining({
        vm: 'vm1',
        generation: 'g1',
        firstLsn: 1,
        durableLsn: 80,
        appliedLsn: 0,
        segments: 1,
        agentConnected: true,
        processorSubscribed: false,
      }),
    ]);
    expect(await (await fetch(s.url.replace('ws:', 'http:') + 'health')).json()).toEqual({ ok: true });
  });

  it('never acks what the log has not reported durable', async () => {
    let gated: GatedStore | undefined;
    const s = await server({ wrap: (st) => (gated = new GatedStore(st)) });
    const { peer } = await agent(s);
    for (const b of await batches('vm1', 'g1', 1, 10)) peer.send(b.frame);
    await eventually(() => s.store.get('vm1')!.appendedLsn === 40, 5000, 'appended');
    await new Promise((r) => setTimeout(r, 300));
    expect(peer.pending).toBe(0); // the frames are written and fsynced, but the log has not said so
    gated!.open();
    expect(await peer.ackedThrough(40)).toBe(40);
  });

  it('welcomes a reconnecting agent with the durable LSN and takes the batches that follow', async () => {
    const s = await server();
    const a = await agent(s);
    for (const b of await batches('vm1', 'g1', 1, 5)) a.peer.send(b.frame);
    await a.peer.ackedThrough(20);
    a.peer.close();
    await a.peer.closed;
    const b = await agent(s);
    expect(b.durableLsn).toBe(20);
    b.peer.send(await batchFrame('vm1', 'g1', 21, 3));
    expect(await b.peer.ackedThrough(23)).toBe(23);
  });

  it('refuses a gap with SR_SEQUENCE and closes; what was acked stays', async () => {
    const s = await server();
    const a = await agent(s);
    a.peer.send(await batchFrame('vm1', 'g1', 1, 4));
    await a.peer.ackedThrough(4);
    a.peer.send(await batchFrame('vm1', 'g1', 6, 2));
    expect(await expectError(a.peer, 'SR_SEQUENCE')).toMatch(/6.*5/);
    const b = await agent(s);
    expect(b.durableLsn).toBe(4);
    b.peer.send(await batchFrame('vm1', 'g1', 3, 4)); // overlap
    await expectError(b.peer, 'SR_SEQUENCE');
  });

  it('refuses a batch of another VM or generation than the hello named', async () => {
    const s = await server();
    const a = await agent(s);
    a.peer.send(await batchFrame('vm2', 'g1', 1, 1));
    await expectError(a.peer, 'SR_PROTOCOL');
    const b = await agent(s);
    b.peer.send(await batchFrame('vm1', 'g0', 1, 1));
    await expectError(b.peer, 'SR_GENERATION');
  });

  it('answers protocol errors with a stable code and closes, and keeps serving everyone else', async () => {
    const s = await server();
    const ok = await agent(s, 'steady');
    const cases: [string, (p: Peer) => void, string][] = [
      ['garbage', (p) => p.send(Buffer.from([0xc1, 0xff, 0x00])), 'SR_PROTOCOL'],
      ['batch before hello', (p) => p.send({ t: 'ack', lsn: 1 }), 'SR_PROTOCOL'],
      ['wrong version', (p) => p.send({ ...agentHello('vm1', 'g1'), v: 2 }), 'SR_PROTOCOL'],
      ['bad vm id', (p) => p.send(agentHello('../etc', 'g1')), 'SR_PROTOCOL'],
      ['unknown role', (p) => p.send({ t: 'hello', v: 1, role: 'admin' }), 'SR_PROTOCOL'],
      ['text message', (p) => p.ws.send('hello'), 'SR_PROTOCOL'],
    ];
    for (const [what, send, code] of cases) {
      const p = await connect(s);
      send(p);
      const m = await p.expect('error').catch((e: Error) => {
        throw new Error(`${what}: ${e.message}`);
      });
      expect(m.code, what).toBe(code);
      await p.closed;
    }
    // After the hello: a batch that fails its schema, one whose record table is the wrong size,
    // one over the record limit.
    const a = await agent(s);
    a.peer.send(encodeMessage({ t: 'batch', vm: 'vm1', generation: 'g1', first: 1, count: 1 }));
    await expectError(a.peer, 'SR_PROTOCOL');
    const b = await agent(s);
    b.peer.send(
      encodeMessage({
        t: 'batch',
        vm: 'vm1',
        generation: 'g1',
        first: 1,
        count: 2,
        recs: Buffer.alloc(32),
        codec: 'none',
        raw: 0,
        data: Buffer.alloc(0),
      }),
    );
    await expectError(b.peer, 'SR_PROTOCOL');
    const c = await agent(s);
    c.peer.send(
      encodeMessage({
        t: 'batch',
        vm: 'vm1',
        generation: 'g1',
        first: 1,
        count: 70_000,
        recs: Buffer.alloc(0),
        codec: 'none',
        raw: 0,
        data: Buffer.alloc(0),
      }),
    );
    await expectError(c.peer, 'SR_LIMIT');
    // The steady agent was never disturbed.
    ok.peer.send(await batchFrame('steady', 'g1', 1, 2));
    expect(await ok.peer.ackedThrough(2)).toBe(2);
  });

  it('closes a connection that sends a frame over maxFrameBytes (1009) and keeps serving', async () => {
    const s = await server({ limits: { maxFrameBytes: 256 * 1024 } });
    const a = await agent(s);
    a.peer.send(await batchFrame('vm1', 'g1', 1, 80)); // 80 x 4 KiB = 320 KiB
    expect((await a.peer.closed).code).toBe(1009);
    const b = await agent(s);
    expect(b.durableLsn).toBe(0);
    b.peer.send(await batchFrame('vm1', 'g1', 1, 8));
    expect(await b.peer.ackedThrough(8)).toBe(8);
  });

  it('closes a connection over maxConnections with 1013 at once, and takes one again when a place frees', async () => {
    const s = await server({ limits: { maxConnections: 2 } });
    const a = await agent(s, 'vm1');
    const b = await agent(s, 'vm2');
    const third = await connect(s);
    expect((await third.closed).code).toBe(1013);
    // The two in place were not disturbed.
    a.peer.send(await batchFrame('vm1', 'g1', 1, 2));
    expect(await a.peer.ackedThrough(2)).toBe(2);
    b.peer.close();
    await b.peer.closed;
    await new Promise((r) => setTimeout(r, 50));
    const c = await agent(s, 'vm2');
    expect(c.durableLsn).toBe(0);
  });

  it('closes a connection that says no hello in time', async () => {
    const s = await server({ limits: { helloTimeoutMs: 200 } });
    const p = await connect(s);
    await expectError(p, 'SR_PROTOCOL');
  });

  it('drops a peer that stops answering pings, keeps one that answers', async () => {
    const s = await server({ limits: { pingIntervalMs: 100 } });
    const mute = await Peer.open(s.url, { autoPong: false });
    peers.push(mute);
    mute.send(PROCESSOR_HELLO);
    await mute.expect('vms');
    const live = await processor(s);
    expect((await mute.closed).code).toBe(1006); // terminated, no close handshake
    await new Promise((r) => setTimeout(r, 300));
    live.peer.send({ t: 'subscribe', vm: 'vm1', generation: null, from: 1 });
    await agent(s);
    expect((await live.peer.expect('vms')).vms.map((v) => v.vm)).toEqual(['vm1']);
  });

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

  it('refuses the same generation with another disk layout (SR_STATE_MISMATCH)', async () => {
    const s = await server();
    const a = await agent(s);
    a.peer.close();
    const p = await connect(s);
    p.send({ ...agentHello('vm1', 'g1'), disks: [{ id: 'os', size: 4096 }] });
    await expectError(p, 'SR_STATE_MISMATCH');
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
});

describe('cache-store server: processors', () => {
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
