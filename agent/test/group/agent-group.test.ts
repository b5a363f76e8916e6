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

// An agent of a group serving its disk over NBD, with the test as the group's coordinator "a": a
// write the NBD client sends after the agent's mark gets its reply only at the COMMIT, the hold is
// counted in the status, and stopping the agent during a hold releases it first.

let t: { dir: string; cleanup: () => Promise<void> };
let agent: Agent;
let dataDir: string;
let coordinator: RawPeer;
let nbd: Raw;

beforeAll(async () => {
  t = await tempDir('agent-group');
  // c never connects: b holds until a's COMMIT (it would commit by itself once it had every READY).
  const peers = await loopbackPeers(['a', 'b', 'c']);
  ({ agent, dataDir } = await startInProcess(t.dir, 'b', {
    group: { name: GROUP, secret: SECRET, peers, frequencyMs: 3_600_000, holdTimeoutMs: 500 },
  }));
  coordinator = await RawPeer.connect(peers[1]!.port);
  expect(await coordinator.handshake({ group: GROUP, from: 'a', to: 'b', secret: SECRET })).toBe('up');
  nbd = await openExport(agent.address.port, 'os');
});
afterAll(async () => {
  coordinator?.socket.destroy();
  nbd?.close();
  await agent?.close();
  await t?.cleanup();
});

const prepare = (round: string): object => ({
  t: 'prepare',
  term: 1,
  mark: { group: GROUP, round, coordinator: 'a', members: ['a', 'b', 'c'], time: Date.now() },
});

/** Sends a WRITE over NBD; `answered` turns true when its reply arrives. */
function write(offset: number, fill: number): { reply: Promise<{ errno: number }>; answered: () => boolean } {
  let done = false;
  const reply = tx(nbd, CMD.WRITE, 0, BigInt(offset), 4096, Buffer.alloc(4096, fill)).finally(() => (done = true));
  return { reply, answered: () => done };
}

/** Waits until `n` writes are done and wait for the round's end only. */
const heldWrites = (n: number): Promise<true> =>
  waitUntil(
    `${n} held write(s) on b`,
    () => (agent.status().group?.holding?.writesHeld === n ? true : undefined),
    2000,
    5,
  );

describe('an agent of a group', () => {
  it('answers an NBD write issued after its mark only at the COMMIT, and counts the hold', async () => {
    await waitUntil('b to see its coordinator a', () => (agent.status().group?.coordinator === 'a' ? true : undefined));
    coordinator.sendSealed(prepare('1.1'));
    expect(await coordinator.nextOf('ready')).toMatchObject({ round: '1.1' });
    const markLsn = agent.status().lsn;

    const w = write(0, 7);
    await heldWrites(1);
    expect(agent.status().lsn).toBe(markLsn + 1);
    expect(w.answered(), 'the reply went out before the COMMIT').toBe(false);
    coordinator.sendSealed({ t: 'commit', round: '1.1' });
    expect((await w.reply).errno).toBe(0);

    const g = agent.status().group!;
    expect(g.last).toMatchObject({ round: '1.1', outcome: 'committed', writesHeld: 1 });
    expect(g.writeHoldMs.count).toBe(1);
    expect(g.rounds).toMatchObject({ committed: 1, aborted: 0 });
    // c is down, which is all the health says of the group: the round itself is no warning.
    expect(agent.health().warnings?.map((w) => w.code)).toEqual(['SR_GROUP_PEER_DOWN']);
  });

  it('releases a held write when it stops, journaling the abort as a shutdown', async () => {
    coordinator.sendSealed(prepare('1.2'));
    expect(await coordinator.nextOf('ready')).toMatchObject({ round: '1.2' });
    const w = write(4096, 8);
    await heldWrites(1);
    await agent.close();
    expect((await w.reply).errno).toBe(0);

    const journal = await FileJournal.open(path.join(dataDir, 'journal'));
    try {
      const round = (await groupRecords(journal)).filter((r) => r.doc.round === '1.2');
      expect(round.map((r) => r.kind)).toEqual([6, 8]);
      expect(round[1]!.doc).toMatchObject({ code: GroupCode.SHUTTING_DOWN });
    } finally {
      await journal.close();
    }
  });
});
