import { describe, expect, it } from 'vitest';
import type { GroupStatus } from '../../src/groups/replication-groups.js';
import { useProcessorCases } from '../processor-cases.js';
import { api, getStatus, startProcessor, until } from '../helpers.js';
import {
  GROUP,
  expectDisksAt,
  pointAt,
  pointsOf,
  startGroup,
  type Manifest,
  type Member,
  type Point,
} from './group-fixture.js';

const cases = useProcessorCases('group-rounds');
const VMS = ['db1', 'web1', 'web2'];

async function groupStatus(listen: string): Promise<GroupStatus> {
  const g = (await getStatus(listen)).groups.find((x) => x.name === GROUP);
  if (g === undefined) throw new Error(`status lists no group ${GROUP}`);
  return g;
}

/** Waits until the group's status has seen `n` rounds end (completed or failed). */
function roundsEnded(listen: string, n: number): Promise<GroupStatus> {
  return until(`${n} rounds of ${GROUP} to end`, async () => {
    const g = await groupStatus(listen);
    return g.rounds.completed + g.rounds.failed >= n ? g : undefined;
  });
}

const isGroupPoint = (round: string) => (p: Point) =>
  p.kind === 'multi-vm' && p.group?.name === GROUP && p.group.point === round;

describe('multi-VM points at the barrier', () => {
  it('a round every member committed is a multi-vm point on each member, exactly at its mark', async () => {
    const { c, members } = await startGroup(cases, VMS);
    const listen = c.processor.listen;
    const time = Date.now();
    const marks = members.map((m) => m.mark('1.1', VMS, time));
    // The first two commit; until the third does, nothing is a group point.
    for (const m of members.slice(0, 2)) m.commit('1.1');
    for (const m of members) await m.flush(c);
    for (const [i, m] of members.entries()) {
      const p = await pointAt(listen, m.vm, marks[i]!, 'tagged', () => true);
      expect(p.kind).toBe('crash');
      expect(p.group).toBeUndefined();
    }
    expect((await groupStatus(listen)).rounds).toEqual({ completed: 0, failed: 0, pending: 1 });

    members[2]!.commit('1.1');
    await members[2]!.flush(c);
    for (const [i, m] of members.entries()) await pointAt(listen, m.vm, marks[i]!, 'multi-vm 1.1', isGroupPoint('1.1'));
    const g = await groupStatus(listen);
    expect(g).toMatchObject({
      name: GROUP,
      members: VMS,
      multiVmFrequencyMs: 300_000,
      rounds: { completed: 1, failed: 0, pending: 0 },
      lastPoint: { id: '1.1', time: new Date(time).toISOString(), members: VMS },
    });
    expect(g.lastFailure).toBeUndefined();
    expect((await getStatus(listen)).vms.map((v) => v.group)).toEqual([GROUP, GROUP, GROUP]);

    // Each member's point holds its writes before the mark and none after.
    const t = await api<{ vms: Manifest[] }>(listen, 'POST', `/groups/${GROUP}/test-failover`, {
      point: 'latest-multi-vm',
      network: 'iso',
    });
    expect(t.status, JSON.stringify(t.body)).toBe(200);
    expect(t.body.vms.map((v) => [v.vm, v.point.lsn, v.point.kind, v.point.group])).toEqual(
      members.map((m, i) => [m.vm, marks[i], 'multi-vm', { name: GROUP, point: '1.1' }]),
    );
    for (const [i, m] of members.entries()) await expectDisksAt(t.body.vms[i]!, m, marks[i]!);
    const clean = await api<{ vms: { vm: string; removed: string[] }[] }>(
      listen,
      'POST',
      `/groups/${GROUP}/test-failover-cleanup`,
    );
    expect(clean.body.vms.map((v) => v.vm)).toEqual(VMS);
  });

  it('an ABORT, or a member that marks the next round without committing, leaves no group point anywhere', async () => {
    const { c, members } = await startGroup(cases, VMS);
    const listen = c.processor.listen;
    const [db1, web1, web2] = members as [Member, Member, Member];
    // 1.1: db1 gave up (its hold timed out); the others committed.
    const m11 = members.map((m) => m.mark('1.1', VMS, Date.now()));
    web1.commit('1.1');
    web2.commit('1.1');
    db1.abort('1.1', 'web2', 'SR_GROUP_TIMEOUT', 'no COMMIT within the hold timeout');
    // 1.2: web2 never commits and goes on to 1.3, which everybody commits.
    const m12 = members.map((m) => m.mark('1.2', VMS, Date.now()));
    db1.commit('1.2');
    web1.commit('1.2');
    const m13 = members.map((m) => m.mark('1.3', VMS, Date.now()));
    for (const m of members) m.commit('1.3');
    for (const m of members) await m.flush(c);

    const g = await roundsEnded(listen, 3);
    expect(g.rounds).toEqual({ completed: 1, failed: 2, pending: 0 });
    expect(g.lastPoint?.id).toBe('1.3');
    expect(g.lastFailure).toMatchObject({ round: '1.2', failedBy: 'web2', code: 'SR_GROUP_NOT_COMMITTED' });
    for (const [i, m] of members.entries()) {
      const points = await pointsOf(listen, m.vm);
      for (const lsn of [m11[i], m12[i]]) {
        const p = points.find((x) => x.lsn === lsn);
        expect(p, `${m.vm} point at ${lsn}`).toMatchObject({ kind: 'crash' });
        expect(p!.group).toBeUndefined();
      }
      expect(points.find((x) => x.lsn === m13[i])).toMatchObject({ kind: 'multi-vm', group: { point: '1.3' } });
    }
    const listed = await api<{ id: string }[]>(listen, 'GET', `/groups/${GROUP}/points`);
    expect(listed.body.map((p) => p.id)).toEqual(['1.3']);
  });

  it('a mark during the initial copy fails the round: no point is cut there, none is labelled', async () => {
    const { c, members } = await startGroup(cases, VMS, { notCopied: ['web2'] });
    const listen = c.processor.listen;
    const marks = members.map((m) => m.mark('4.1', VMS, Date.now()));
    for (const m of members) m.commit('4.1');
    for (const m of members) await m.flush(c);
    const g = await roundsEnded(listen, 1);
    expect(g.rounds).toMatchObject({ completed: 0, failed: 1 });
    expect(g.lastFailure).toMatchObject({ round: '4.1', failedBy: 'web2', code: 'SR_RESYNCING' });
    expect((await pointsOf(listen, 'web2')).length).toBe(0);
    for (const [i, m] of members.slice(0, 2).entries())
      expect((await pointsOf(listen, m.vm)).find((p) => p.lsn === marks[i])).toMatchObject({ kind: 'crash' });
  });

  it('restarted between commits, the processor rebuilds the round and labels it once the last member commits', async () => {
    const { c, members } = await startGroup(cases, VMS);
    const marks = members.map((m) => m.mark('2.7', VMS, Date.now()));
    for (const m of members.slice(0, 2)) m.commit('2.7');
    for (const m of members) await m.flush(c);
    await pointAt(c.processor.listen, 'web2', marks[2]!, 'cut', () => true);
    await c.processor.close();

    const again = await startProcessor(c.dataDir, c.cs.url);
    try {
      expect((await groupStatus(again.listen)).rounds).toEqual({ completed: 0, failed: 0, pending: 1 });
      members[2]!.commit('2.7');
      await members[2]!.flush(c);
      for (const [i, m] of members.entries())
        await pointAt(again.listen, m.vm, marks[i]!, 'multi-vm 2.7', isGroupPoint('2.7'));
      expect((await groupStatus(again.listen)).rounds).toEqual({ completed: 1, failed: 0, pending: 0 });
    } finally {
      await again.close();
    }
    // Restarting once more finds it done, and changes nothing.
    const third = await startProcessor(c.dataDir, c.cs.url);
    try {
      expect(await groupStatus(third.listen)).toMatchObject({ rounds: { completed: 1, failed: 0, pending: 0 } });
      for (const [i, m] of members.entries())
        expect((await pointsOf(third.listen, m.vm)).find((p) => p.lsn === marks[i])).toMatchObject({
          kind: 'multi-vm',
          group: { name: GROUP, point: '2.7' },
        });
    } finally {
      await third.close();
    }
  });
});
