import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir, waitUntil } from '@site-recovery/test';
import type { Agent } from '../../src/agent.js';
import { GroupCode } from '../../src/group/group-codes.js';
import { FileJournal } from '../../src/journal/file-journal.js';
import { startInProcess } from '../in-process-agent.js';
import { CMD, openExport, tx, type Raw } from '../nbd/raw-nbd.js';
import { GROUP, SECRET, groupRecords, loopbackPeers } from './group-fixture.js';
import { RawPeer } from './raw-peer.js';

// A VM in bitmap mode takes no part in multi-VM points (its replica lacks writes until the resync):
// the round it holds when bitmap mode begins is aborted with that reason, journaled for the
// processor, and later PREPAREs are refused with it. The test is the coordinator "a"; the agent "b"
// replicates to a cache-store that cannot be reached, so its journal only grows.

const CAP = 1 << 20;
const BLOCK = 64 * 1024;

let t: { dir: string; cleanup: () => Promise<void> };
let agent: Agent;
let dataDir: string;
let coordinator: RawPeer;
const nbd: Raw[] = [];

beforeAll(async () => {
  t = await tempDir('bitmap-rounds');
  const peers = await loopbackPeers(['a', 'b', 'c']);
  ({ agent, dataDir } = await startInProcess(t.dir, 'b', {
    group: { name: GROUP, secret: SECRET, peers, frequencyMs: 3_600_000, holdTimeoutMs: 500 },
    // No cache-store answers: the initial copy sends every block without waiting for the replica's sums.
    replication: { url: 'ws://127.0.0.1:9', sums: { waitMs: 0 } },
    journal: { maxBytes: CAP },
  }));
  coordinator = await RawPeer.connect(peers[1]!.port);
  expect(await coordinator.handshake({ group: GROUP, from: 'a', to: 'b', secret: SECRET })).toBe('up');
  for (let i = 0; i < 2; i++) nbd.push(await openExport(agent.address.port, 'os'));
});
afterAll(async () => {
  coordinator?.socket.destroy();
  for (const c of nbd) c.close();
  await agent?.close();
  await t?.cleanup();
});

const prepare = (round: string): object => ({
  t: 'prepare',
  term: 1,
  mark: { group: GROUP, round, coordinator: 'a', members: ['a', 'b', 'c'], time: Date.now() },
});

const write = (c: Raw, block: number): Promise<{ errno: number }> =>
  tx(c, CMD.WRITE, 0, BigInt(block * BLOCK), BLOCK, Buffer.alloc(BLOCK, block & 0xff));

describe('a group member in bitmap mode', () => {
  it('aborts the round it holds when bitmap mode begins, and refuses the next with that reason', async () => {
    await waitUntil('b to see its coordinator a', () => (agent.status().group?.coordinator === 'a' ? true : undefined));
    await waitUntil('the initial copy of the empty disk', () =>
      agent.status().replication?.initialCopy.state === 'done' ? true : undefined,
    );
    // Up to one block below the cap, with nothing to ship it to.
    let block = 0;
    while (agent.status().journal.bytes + BLOCK < CAP) expect((await write(nbd[0]!, block++)).errno).toBe(0);

    coordinator.sendSealed(prepare('1.1'));
    expect(await coordinator.nextOf('ready')).toMatchObject({ round: '1.1' });
    // Journaled, so the journal reaches its cap; its reply is held for the round.
    const held = write(nbd[0]!, block++);
    await waitUntil('the journal to reach its cap', () => (agent.status().journal.bytes >= CAP ? true : undefined));
    // The next write finds the journal full: bitmap mode, and the round is given up.
    expect((await write(nbd[1]!, block++)).errno).toBe(0);
    expect((await held).errno).toBe(0);
    const s = agent.status();
    expect(s.mode?.state).toBe('bitmap');
    expect(s.group?.lastFailure).toMatchObject({ round: '1.1', code: GroupCode.BITMAP_MODE, failedBy: 'b' });

    coordinator.sendSealed(prepare('1.2'));
    const refused = await coordinator.nextOf('refused');
    expect(refused).toMatchObject({ round: '1.2', code: GroupCode.BITMAP_MODE });
    expect(String(refused['reason'])).toMatch(/bitmap mode since .* bytes dirty/);
    expect(agent.status().group?.rounds).toMatchObject({ aborted: 1, refused: 1 });

    await agent.close();
    const journal = await FileJournal.open(path.join(dataDir, 'journal'));
    try {
      const round = (await groupRecords(journal)).filter((r) => r.doc.round === '1.1');
      expect(round.map((r) => r.kind)).toEqual([6, 8]);
      expect(round[1]!.doc).toMatchObject({ code: GroupCode.BITMAP_MODE, failedBy: 'b' });
      expect((round[1]!.doc as { reason: string }).reason).toMatch(/journal reached its cap/);
    } finally {
      await journal.close();
    }
  });
});
