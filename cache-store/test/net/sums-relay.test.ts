import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { encodeMessage } from '@site-recovery/shared';
import { batchFrame, type Peer } from '../helpers.js';
import { expectError, useServers } from './server-harness.js';

const { server, agent, processor } = useServers();

/** What the cache-store relays for an agent's request: the checked fields, encoded afresh. */
function requestBytes(vm: string, generation: string): Buffer {
  return encodeMessage({ t: 'sums-request', vm, generation, blockBytes: 4096, algo: 'xxh128' });
}

function sumsFrame(vm: string, generation: string, first: number, blocks: number): Buffer {
  return encodeMessage({
    t: 'sums',
    vm,
    generation,
    disk: 0,
    first,
    blockBytes: 4096,
    sums: randomBytes(blocks * 16),
  });
}

function endFrame(vm: string, generation: string): Buffer {
  return encodeMessage({ t: 'sums-end', vm, generation, blockBytes: 4096, available: true });
}

async function subscribed(p: Peer, vm: string): Promise<void> {
  p.send({ t: 'subscribe', vm, generation: null, from: 1 });
  await p.expect('stream');
}

describe('sums relay (checksum resync)', () => {
  it("relays the agent's request to the subscribed processor and its sums back, byte for byte", async () => {
    const s = await server();
    const a = await agent(s, 'vm1', 'g2');
    const p = await processor(s);
    await subscribed(p.peer, 'vm1');
    // An unknown field is dropped: what travels on is the request as the schema knows it.
    a.peer.send({ t: 'sums-request', vm: 'vm1', generation: 'g2', blockBytes: 4096, algo: 'xxh128', x: 'y' });
    expect((await p.peer.recvRaw()).equals(requestBytes('vm1', 'g2'))).toBe(true);
    const frames = [sumsFrame('vm1', 'g2', 0, 1000), sumsFrame('vm1', 'g2', 1000, 24), endFrame('vm1', 'g2')];
    for (const f of frames) p.peer.send(f);
    for (const f of frames) expect((await a.peer.recvRaw()).equals(f)).toBe(true);
  });

  it('keeps the latest request until a processor subscribes, and asks each new connection until the answer ends', async () => {
    const s = await server();
    const a = await agent(s, 'vm1', 'g2');
    a.peer.send({ t: 'sums-request', vm: 'vm1', generation: 'g2', blockBytes: 8192, algo: 'xxh128' });
    a.peer.send({ t: 'sums-request', vm: 'vm1', generation: 'g2', blockBytes: 4096, algo: 'xxh128' });
    const p = await processor(s);
    await subscribed(p.peer, 'vm1');
    expect((await p.peer.recvRaw()).equals(requestBytes('vm1', 'g2'))).toBe(true);
    // Subscribing again on the same connection (a cursor restart) does not ask a second time.
    await subscribed(p.peer, 'vm1');
    // A processor that reconnects before answering is asked again ...
    p.peer.close();
    const q = await processor(s);
    await subscribed(q.peer, 'vm1');
    expect((await q.peer.recvRaw()).equals(requestBytes('vm1', 'g2'))).toBe(true);
    q.peer.send(endFrame('vm1', 'g2'));
    expect((await a.peer.recvRaw()).equals(endFrame('vm1', 'g2'))).toBe(true);
    // ... and once the answer ended, nobody is.
    const r = await processor(s);
    await subscribed(r.peer, 'vm1');
    a.peer.send(await batchFrame('vm1', 'g2', 1, 1));
    expect((await r.peer.recv()).t).toBe('batch'); // the record, with no request before it
  });

  it('refuses a request for another VM (SR_PROTOCOL) or generation (SR_GENERATION)', async () => {
    const s = await server();
    const a = await agent(s, 'vm1', 'g2');
    a.peer.send({ t: 'sums-request', vm: 'vm2', generation: 'g2', blockBytes: 4096, algo: 'xxh128' });
    expect(await expectError(a.peer, 'SR_PROTOCOL')).toMatch(/vm2.*vm1/);
    const b = await agent(s, 'vm1', 'g2');
    b.peer.send({ t: 'sums-request', vm: 'vm1', generation: 'g1', blockBytes: 4096, algo: 'xxh128' });
    expect(await expectError(b.peer, 'SR_GENERATION')).toMatch(/g1.*g2/);
    const c = await agent(s, 'vm1', 'g2');
    c.peer.send({ t: 'sums-request', vm: 'vm1', generation: 'g2', blockBytes: 3000, algo: 'xxh128' });
    await expectError(c.peer, 'SR_PROTOCOL');
  });

  it("drops sums of another generation than the agent's, and of a VM the processor did not subscribe", async () => {
    const s = await server();
    const a = await agent(s, 'vm1', 'g2');
    const b = await agent(s, 'vm2', 'g1');
    const p = await processor(s);
    await subscribed(p.peer, 'vm1');
    p.peer.send(sumsFrame('vm1', 'g1', 0, 4)); // the agent's previous generation
    p.peer.send(sumsFrame('vm2', 'g1', 0, 4)); // not subscribed by this processor
    const good = sumsFrame('vm1', 'g2', 0, 4);
    p.peer.send(good);
    expect((await a.peer.recvRaw()).equals(good)).toBe(true);
    p.peer.send(endFrame('vm2', 'g1'));
    await subscribed(p.peer, 'vm2');
    const late = endFrame('vm2', 'g1');
    p.peer.send(late);
    expect((await b.peer.recvRaw()).equals(late)).toBe(true); // the only frame vm2's agent got
  });

  it('stops reading the processor while the agent does not read its sums, and delivers all of them once it does', async () => {
    const s = await server({ limits: { maxBufferedBytes: 256 * 1024 } });
    const a = await agent(s, 'vm1', 'g2');
    const other = await agent(s, 'vm2', 'g1');
    const p = await processor(s);
    await subscribed(p.peer, 'vm1');
    a.peer.ws.pause();
    const frames = Array.from({ length: 96 }, (_, i) => sumsFrame('vm1', 'g2', i * 65536, 65536)); // 96 MiB
    for (const f of frames) p.peer.send(f);
    p.peer.send({ t: 'subscribe', vm: 'vm2', generation: null, from: 1 });
    // The subscribe waits behind the sums the agent has not taken: the processor's connection is not
    // read. Nothing to await for an answer that must not come: a second of looking.
    await new Promise((r) => setTimeout(r, 1000));
    expect(p.peer.pending).toBe(0);
    a.peer.ws.resume();
    for (const [i, f] of frames.entries()) expect((await a.peer.recvRaw(30_000)).equals(f), `frame ${i}`).toBe(true);
    expect(await p.peer.expect('stream', 30_000)).toMatchObject({ vm: 'vm2' });
    expect(other.peer.pending).toBe(0);
  });
});
