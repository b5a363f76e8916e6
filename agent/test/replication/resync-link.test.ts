import { randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RecordKind } from '@site-recovery/shared';
import {
  firstDifference,
  makeImage,
  startCacheStore,
  tempDir,
  waitUntil,
  type ServiceProcess,
} from '@site-recovery/test';
import type { Agent } from '../../src/agent.js';
import { DISK_SIZE, startInProcess } from '../in-process-agent.js';
import { ReplicaPeer } from './replica-peer.js';

const BLOCK = 4096;

// The agent and the real cache-store, with a processor stand-in (replica-peer.ts) that applies the
// stream to a replica image and answers sums requests from it: the agent's half of the checksum
// resync, end to end over the relay.
describe('a new generation after a lost data dir, through the cache-store', () => {
  let t: { dir: string; cleanup: () => Promise<void> };
  let cs: ServiceProcess;
  let peer: ReplicaPeer | undefined;
  let agent: Agent | undefined;
  beforeAll(async () => {
    t = await tempDir('resynclink');
    cs = await startCacheStore(path.join(t.dir, 'cs'));
  });
  afterAll(async () => {
    await agent?.close();
    peer?.close();
    await cs?.stop();
    await t?.cleanup();
  });

  /** Waits until the copy is done and the stand-in applied everything the agent journaled. */
  async function replicated(a: Agent, p: ReplicaPeer): Promise<ReturnType<Agent['status']>> {
    return waitUntil(
      'the initial copy to finish and the replica to apply every record',
      () => {
        p.check();
        const s = a.status();
        const applied = p.applied.get(s.replication!.generation)?.at(-1)?.lsn;
        return s.replication!.initialCopy.state === 'done' && applied === s.lsn ? s : undefined;
      },
      30_000,
      20,
    );
  }

  it('sends only the blocks that differ from the replica, and the replica ends identical', async () => {
    const image = path.join(t.dir, 'lost01.img');
    await makeImage(image, DISK_SIZE, [
      { offset: 0, length: 3 << 20 },
      { offset: 9 << 20, length: 2 << 20 },
    ]);
    const replica = path.join(t.dir, 'replica.img');
    await fsp.writeFile(replica, randomBytes(DISK_SIZE)); // what a replica of another past holds
    peer = await ReplicaPeer.connect(`ws://${cs.listen}`, 'lost01', replica);
    const url = `ws://${cs.listen}`;
    const first = await startInProcess(t.dir, 'lost01', { replication: { url } });
    agent = first.agent;
    const one = await replicated(agent, peer);
    // No replica to compare with: every chunk went, the zero ones as ZERO records over the garbage.
    expect(one.replication!.initialCopy).toMatchObject({
      method: 'full',
      fullCopyReason: 'the replica cannot be compared: no replica yet',
      sentBytes: 5 << 20,
      zeroedBytes: DISK_SIZE - (5 << 20),
    });
    expect(await firstDifference(image, replica)).toBe(-1);

    await agent.close();
    agent = undefined;
    await fsp.rm(first.dataDir, { recursive: true, force: true });
    // Behind the agent's back: six blocks get new data, two data blocks become zeroes.
    const fh = await fsp.open(image, 'r+');
    const changed = [5, 300, 700, 2300, 2301, 4000];
    for (const b of changed) await fh.write(randomBytes(BLOCK), 0, BLOCK, b * BLOCK);
    for (const b of [100, 2500]) await fh.write(Buffer.alloc(BLOCK), 0, BLOCK, b * BLOCK);
    await fh.close();
    peer.hasReplica = true;

    agent = (await startInProcess(t.dir, 'lost01', { replication: { url } })).agent;
    const two = await replicated(agent, peer);
    expect(two.replication!.generation).not.toBe(one.replication!.generation);
    expect(peer.requests.map((r) => r.generation)).toContain(two.replication!.generation);
    const records = peer.applied
      .get(two.replication!.generation)!
      .filter((r) => r.kind !== RecordKind.SYNC)
      .sort((a, b) => a.offset - b.offset);
    expect(records.map((r) => [r.kind, r.offset / BLOCK, r.length / BLOCK])).toEqual([
      [RecordKind.WRITE, 5, 1],
      [RecordKind.ZERO, 100, 1],
      [RecordKind.WRITE, 300, 1],
      [RecordKind.WRITE, 700, 1],
      [RecordKind.WRITE, 2300, 2],
      [RecordKind.ZERO, 2500, 1],
      [RecordKind.WRITE, 4000, 1],
    ]);
    expect(two.replication!.initialCopy).toMatchObject({
      method: 'difference',
      comparedBytes: DISK_SIZE,
      equalBytes: DISK_SIZE - 8 * BLOCK,
      sentBytes: 6 * BLOCK,
      zeroedBytes: 2 * BLOCK,
    });
    // On the wire: the six blocks' payloads, nothing more.
    expect(two.replication!.stream.rawBytesSent).toBe(6 * BLOCK);
    expect(await firstDifference(image, replica)).toBe(-1);
  });
});
