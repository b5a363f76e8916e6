import { describe, expect, it } from 'vitest';
import { agentHello, batchFrame, batches, eventually } from '../helpers.js';
import { GatedStore, expectError, useServers } from './server-harness.js';

const { server, connect, agent } = useServers();

describe('agent sessions', () => {
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

  it('refuses the same generation with another disk layout (SR_STATE_MISMATCH)', async () => {
    const s = await server();
    const a = await agent(s);
    a.peer.close();
    const p = await connect(s);
    p.send({ ...agentHello('vm1', 'g1'), disks: [{ id: 'os', size: 4096 }] });
    await expectError(p, 'SR_STATE_MISMATCH');
  });
});
