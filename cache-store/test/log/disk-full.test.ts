import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Peer, PROCESSOR_HELLO, agentHello, batches } from '../helpers.js';
import { startServer, type RunningServer } from '../net/server-harness.js';

/**
 * A full disk, for real: the data dir is a small tmpfs (the tests run as root, like CI), so writes
 * fail with ENOSPC inside the kernel rather than in a mock.
 */
const mountPoint = await fs.mkdtemp(path.join(os.tmpdir(), 'sr-cs-full-'));
let mounted = false;
let running: RunningServer | undefined;

beforeAll(() => {
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', mountPoint]);
  mounted = true;
});

afterAll(async () => {
  await running?.stop().catch(() => undefined);
  if (mounted) execFileSync('umount', ['-l', mountPoint]);
  await fs.rm(mountPoint, { recursive: true, force: true });
});

describe('cache-store with a full disk', () => {
  it('reports SR_NO_SPACE and closes, never acks what is not durable, and resumes from the durable LSN once there is room', async () => {
    running = await startServer({ dataDir: mountPoint, store: { segmentBytes: 1024 * 1024 } });
    const s = running;
    const agent = await Peer.open(s.url);
    agent.send(agentHello('vm1', 'g1'));
    expect((await agent.expect('welcome')).durableLsn).toBe(0);
    const sent = await batches('vm1', 'g1', 1, 400, 4, 4096); // 400 x 16 KiB = 6.4 MiB into 3 MiB
    for (const b of sent) agent.send(b.frame);
    let acked = 0;
    let error: { code: string; message: string } | undefined;
    while (error === undefined) {
      const m = await agent.recv();
      if (m.t === 'ack') acked = m.lsn;
      else if (m.t === 'error') error = m;
      else throw new Error(`unexpected ${m.t}`);
    }
    expect(error.code).toBe('SR_NO_SPACE');
    expect(error.message).toMatch(/vm1/);
    expect((await agent.closed).code).toBe(1011);
    expect(acked).toBeGreaterThan(0);
    expect(acked).toBeLessThan(1600);
    const status = (await s.status()).vms[0]!;
    expect(status['durableLsn']).toBe(acked);
    expect(status['failed']).toMatch(/no space|ENOSPC/i);

    // Room again: the next connection is welcomed at the durable LSN and goes on from there.
    execFileSync('mount', ['-o', 'remount,size=16m', mountPoint]);
    const again = await Peer.open(s.url);
    again.send(agentHello('vm1', 'g1'));
    const durable = (await again.expect('welcome')).durableLsn;
    expect(durable).toBe(acked);
    const rest = sent.filter((b) => b.first > durable).slice(0, 50);
    for (const b of rest) again.send(b.frame);
    const last = rest[rest.length - 1]!.last;
    expect(await again.ackedThrough(last)).toBe(last);

    // Everything is served back byte for byte, with no trace of the failed writes.
    const proc = await Peer.open(s.url);
    proc.send(PROCESSOR_HELLO);
    await proc.expect('vms');
    proc.send({ t: 'subscribe', vm: 'vm1', generation: 'g1', from: 1 });
    await proc.expect('stream');
    for (let i = 0; i < last / 4; i++) expect((await proc.recvRaw()).equals(sent[i]!.frame), `batch ${i}`).toBe(true);
    agent.close();
    again.close();
    proc.close();
  });
});
