import { ErrorMessageSchema, WelcomeSchema, decodeMessage, encodeMessage } from '@site-recovery/shared';
import { describe, expect, it } from 'vitest';
import { DISKS, PROCESSOR_HELLO, agentHello, batchFrame, eventually, type Peer } from '../helpers.js';
import { OPCODE, RawWs, clientFrame, u64 } from './raw-ws.js';
import { expectError, useServers, type RunningServer } from './server-harness.js';

const { server, connect, agent, processor } = useServers();

/** A raw connection that said hello (as a well-formed masked frame) and got its welcome. */
async function rawAgent(s: RunningServer, vm: string): Promise<RawWs> {
  const raw = await RawWs.open(s.url);
  raw.write(clientFrame(0x80 | OPCODE.BINARY, encodeMessage(agentHello(vm, 'g1'))));
  const f = await raw.next();
  expect(f.opcode).toBe(OPCODE.BINARY);
  expect(decodeMessage(f.payload, WelcomeSchema).durableLsn).toBe(0);
  return raw;
}

describe('peer connections: messages', () => {
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

  it('drops a peer that stops answering pings, keeps one that answers', async () => {
    const s = await server({ limits: { pingIntervalMs: 100 } });
    const mute = await connect(s, { autoPong: false });
    mute.send(PROCESSOR_HELLO);
    await mute.expect('vms');
    const live = await processor(s);
    expect((await mute.closed).code).toBe(1006); // terminated, no close handshake
    await new Promise((r) => setTimeout(r, 300));
    live.peer.send({ t: 'subscribe', vm: 'vm1', generation: null, from: 1 });
    await agent(s);
    expect((await live.peer.expect('vms')).vms.map((v) => v.vm)).toEqual(['vm1']);
  });
});

describe('peer connections: hello', () => {
  it('refuses a hello declaring more disks than maxDisks with SR_LIMIT, storing nothing', async () => {
    const s = await server({ limits: { maxDisks: 2 } });
    const p = await connect(s);
    p.send({ ...agentHello('vm1', 'g1'), disks: [...DISKS, { id: 'extra', size: 4096 }] });
    expect(await expectError(p, 'SR_LIMIT')).toMatch(/3 disks.*maxDisks 2/);
    expect((await s.status()).vms).toEqual([]);
  });

  it('holds the hello timer only until the hello: a silent peer is closed 1008, one that said hello stays', async () => {
    const s = await server({ limits: { helloTimeoutMs: 150 } });
    const talker = await agent(s);
    const silent = await connect(s);
    const m = await silent.expect('error');
    expect(m).toMatchObject({ code: 'SR_PROTOCOL' });
    expect(m.message).toContain('150 ms');
    expect((await silent.closed).code).toBe(1008);
    // The silent peer's timeout has fired, so the talker's (armed earlier) would have too.
    talker.peer.send(await batchFrame('vm1', 'g1', 1, 2));
    expect(await talker.peer.ackedThrough(2)).toBe(2);
  });
});

describe('peer connections: frames as bytes on the wire', () => {
  it("a hand-made masked frame is served like any client's (the raw client is sound)", async () => {
    const s = await server();
    const raw = await rawAgent(s, 'vm1');
    raw.write(clientFrame(0x80 | OPCODE.BINARY, await batchFrame('vm1', 'g1', 1, 1)));
    expect((await raw.next()).opcode).toBe(OPCODE.BINARY); // the ack
    raw.destroy();
  });

  it('closes on each malformed frame with the RFC 6455 code, and keeps serving the others', async () => {
    const s = await server({ limits: { maxFrameBytes: 64 * 1024 } });
    const steady = await agent(s, 'steady');
    const cases: [string, Buffer, number][] = [
      ['unmasked client frame', Buffer.concat([Buffer.from([0x82, 0x03]), Buffer.from('abc')]), 1002],
      ['reserved opcode 0x3', clientFrame(0x83, Buffer.alloc(0)), 1002],
      ['RSV1 set with no extension agreed', clientFrame(0xc2, Buffer.from([1, 2, 3])), 1002],
      ['ping without FIN (a fragmented control frame)', clientFrame(OPCODE.PING, Buffer.alloc(0)), 1002],
      ['continuation with nothing to continue', clientFrame(0x80, Buffer.from('x')), 1002],
      ['close frame with reserved code 1005', clientFrame(0x80 | OPCODE.CLOSE, Buffer.from([0x03, 0xed])), 1002],
      ['text frame that is not UTF-8', clientFrame(0x80 | OPCODE.TEXT, Buffer.from([0xff, 0xfe])), 1007],
      // Only the header: the length alone is refused, the server never waits for 1 MiB to arrive.
      [
        'length over maxFrameBytes',
        Buffer.concat([Buffer.from([0x82, 0xff]), u64(1024 * 1024), Buffer.alloc(4)]),
        1009,
      ],
    ];
    for (const [what, bytes, code] of cases) {
      const raw = await RawWs.open(s.url);
      raw.write(bytes);
      const closed = await raw.closeFrame().catch((e: Error) => {
        throw new Error(`${what}: ${e.message}`);
      });
      expect(closed.code, what).toBe(code);
      expect(closed.before, what).toEqual([]); // ws closes at once; no protocol message precedes it
      await raw.gone();
    }
    steady.peer.send(await batchFrame('steady', 'g1', 1, 2));
    expect(await steady.peer.ackedThrough(2)).toBe(2);
  });

  it('a bad frame after the hello frees the VM: status shows no agent, the next agent is welcomed', async () => {
    const s = await server();
    const raw = await rawAgent(s, 'vm1');
    expect((await s.status()).vms[0]).toMatchObject({ vm: 'vm1', agentConnected: true });
    raw.write(clientFrame(0x83, Buffer.alloc(0)));
    expect((await raw.closeFrame()).code).toBe(1002);
    await eventually(
      async () => (await s.status()).vms[0]?.['agentConnected'] === false,
      5000,
      'status showing vm1 without an agent',
    );
    expect((await agent(s)).durableLsn).toBe(0);
  });

  it('answers bytes that are no message with an error frame, then close 1008 whose reason is the code', async () => {
    const s = await server();
    const raw = await RawWs.open(s.url);
    raw.write(clientFrame(0x80 | OPCODE.BINARY, Buffer.from([0xc1]))); // 0xc1: never used by msgpack
    const closed = await raw.closeFrame();
    expect(closed.code).toBe(1008);
    expect(closed.reason).toBe('SR_PROTOCOL');
    expect(closed.before.map((f) => f.opcode)).toEqual([OPCODE.BINARY]);
    expect(decodeMessage(closed.before[0]!.payload, ErrorMessageSchema)).toMatchObject({
      t: 'error',
      code: 'SR_PROTOCOL',
    });
  });
});
