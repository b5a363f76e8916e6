import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { tempDir, waitUntil } from '@site-recovery/test';
import type { GroupPeer } from '../../src/group/group-config.js';
import { GroupCode } from '../../src/group/group-codes.js';
import { GROUP, SECRET, groupRecords, loopbackPeers, roundsOf, startMember, type TestMember } from './group-fixture.js';
import { RawPeer } from './raw-peer.js';

// Rounds between members in this process, each with its own journal, LSN sequence and write gate,
// linked over real TCP on loopback: what each journal holds after a round that commits, one whose
// member falls silent, one whose member is gone, and one whose coordinator died and came back.

const FREQUENCY_MS = 300;
let t: { dir: string; cleanup: () => Promise<void> };
const running = new Set<TestMember>();

beforeAll(async () => {
  t = await tempDir('group-rounds');
});
afterEach(async () => {
  await Promise.all([...running].map((m) => m.close()));
  running.clear();
});
afterAll(() => t?.cleanup());

async function start(root: string, vm: string, peers: readonly GroupPeer[]): Promise<TestMember> {
  const m = await startMember(root, vm, { peers, frequencyMs: FREQUENCY_MS });
  running.add(m);
  return m;
}

async function stop(m: TestMember): Promise<void> {
  await m.close();
  running.delete(m);
}

const termOf = (round: string): number => Number(round.split('.')[0]);
/** Whether round `r` comes after round `than` (terms first, then the sequence within a term). */
const later = (r: string, than: string): boolean => {
  const [rt, rs] = r.split('.').map(Number) as [number, number];
  const [tt, ts] = than.split('.').map(Number) as [number, number];
  return rt > tt || (rt === tt && rs > ts);
};

/** A round after `after` that every one of `members` journaled as committed (the newest), once there is one. */
async function committedByAll(members: readonly TestMember[], what: string, after = '0.0'): Promise<string> {
  return waitUntil(
    what,
    async () => {
      const sets = await Promise.all(members.map((m) => roundsOf(m.journal, 'commit')));
      const common = sets[0]!.filter((r) => later(r, after) && sets.every((s) => s.includes(r)));
      return common.at(-1);
    },
    20_000,
    50,
  );
}

/** Checks that `round` is a whole group point: a mark and a commit in every journal, mark first. */
async function expectCommitted(members: readonly TestMember[], round: string): Promise<void> {
  for (const m of members) {
    const records = (await groupRecords(m.journal)).filter((r) => r.doc.round === round);
    expect(
      records.map((r) => r.kind),
      `group records of round ${round} in ${m.vm}'s journal`,
    ).toEqual([6, 7]);
    expect(records[0]!.doc).toMatchObject({ group: GROUP, coordinator: 'a', members: ['a', 'b', 'c'] });
  }
}

describe('group rounds', () => {
  it('commits a round with the same mark and commit in every journal', async () => {
    const root = `${t.dir}/commit`;
    const peers = await loopbackPeers(['a', 'b', 'c']);
    const ms = await Promise.all(['c', 'b', 'a'].map((vm) => start(root, vm, peers)));
    const round = await committedByAll(ms, 'a round committed by a, b and c');
    await expectCommitted(ms, round);
    for (const m of ms) {
      const s = m.group.status();
      expect(s.coordinator).toBe('a');
      expect(s.peers.every((p) => p.connected)).toBe(true);
      expect(s.rounds.committed).toBeGreaterThan(0);
      expect(s.last?.outcome).toBe('committed');
    }
  });

  it('aborts, on every member, a round whose member authenticated and then fell silent; commits once it is back', async () => {
    const root = `${t.dir}/mute`;
    const peers = await loopbackPeers(['a', 'b', 'c']);
    // "c" answers the handshake of whoever dials it and then says nothing, as a paused process would.
    const mute = net.createServer((socket) => {
      void new RawPeer(socket).accept({ group: GROUP, self: 'c', secret: SECRET }).catch(() => undefined);
    });
    const sockets = new Set<net.Socket>();
    mute.on('connection', (s) => sockets.add(s));
    await new Promise<void>((resolve) => mute.listen(peers[2]!.port, '127.0.0.1', resolve));
    const a = await start(root, 'a', peers);
    const b = await start(root, 'b', peers);

    const aborted = await waitUntil(
      'a round that b marked and then aborted',
      async () => {
        const marked = await roundsOf(b.journal, 'mark');
        const abortedOnB = await roundsOf(b.journal, 'abort');
        return abortedOnB.find((r) => marked.includes(r));
      },
      20_000,
      50,
    );
    for (const m of [a, b]) {
      expect(await roundsOf(m.journal, 'abort'), `${m.vm} journaled the abort`).toContain(aborted);
      expect(await roundsOf(m.journal, 'commit'), `${m.vm} has no commit`).toEqual([]);
    }
    expect(a.group.status().lastFailure).toMatchObject({ failedBy: 'c' });
    await waitUntil('a and b to hold nothing', () => (a.gate.holding || b.gate.holding ? undefined : true), 5000, 10);

    await new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      mute.close(() => resolve());
    });
    const c = await start(root, 'c', peers);
    const round = await committedByAll([a, b, c], 'a round committed once the real c is back');
    await expectCommitted([a, b, c], round);
  });

  it('fails rounds at once while a member is gone, holding nothing, and commits again once it is back', async () => {
    const root = `${t.dir}/gone`;
    const peers = await loopbackPeers(['a', 'b', 'c']);
    const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((vm) => start(root, vm, peers)));
    await committedByAll([a!, b!, c!], 'a first round');
    await stop(c!);
    const started = a!.group.status().rounds.started;
    const failure = await waitUntil(
      'a round a failed for want of c',
      () => {
        const s = a!.group.status();
        return s.rounds.started > started + 1 && s.lastFailure?.code === GroupCode.MEMBER_DOWN
          ? s.lastFailure
          : undefined;
      },
      20_000,
      20,
    );
    expect(failure.failedBy).toBe('c');
    expect(await roundsOf(a!.journal, 'mark')).not.toContain(failure.round);
    expect(a!.gate.holding || b!.gate.holding).toBe(false);

    const c2 = await start(root, 'c', peers);
    const round = await committedByAll([a!, b!, c2], 'a round committed once c is back', failure.round);
    await expectCommitted([a!, b!, c2], round);
  });

  it('hands the coordinator role to the next name when it dies, and takes a term above all seen when it is back', async () => {
    const root = `${t.dir}/takeover`;
    const peers = await loopbackPeers(['a', 'b', 'c']);
    const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((vm) => start(root, vm, peers)));
    const first = await committedByAll([a!, b!, c!], 'a first round');
    await stop(a!);
    const byB = await waitUntil(
      'b to coordinate, and fail rounds for want of a',
      () => {
        const s = b!.group.status();
        const f = s.lastFailure;
        return s.coordinator === 'b' && f !== undefined && f.failedBy === 'a' && termOf(f.round) > termOf(first)
          ? f
          : undefined;
      },
      20_000,
      20,
    );
    expect(c!.group.status().coordinator).toBe('b');

    const a2 = await start(root, 'a', peers);
    const round = await committedByAll([a2, b!, c!], 'a round committed by the restarted a', byB.round);
    expect(termOf(round)).toBeGreaterThan(termOf(byB.round));
    await expectCommitted([a2, b!, c!], round);
    expect(a2.group.status().coordinator).toBe('a');
  });
});
