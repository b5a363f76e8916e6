import { ErrorCode, SrError, createLogger } from '@site-recovery/shared';
import { describe, expect, it } from 'vitest';
import { defaultTargetPlanner } from '../../src/failover/target-planner.js';
import { Processor } from '../../src/processor.js';
import { FileReplicaStore } from '../../src/replica/file-replica-store.js';
import { useProcessorCases, type ProcessorCase } from '../processor-cases.js';
import { api, expectImages, getStatus, listTree, replicaBytes } from '../helpers.js';
import {
  DISKS,
  GROUP,
  expectDisksAt,
  pointAt,
  sr,
  startGroup,
  type ApiError,
  type Manifest,
  type Member,
} from './group-fixture.js';

const cases = useProcessorCases('group-failover');
const VMS = ['db1', 'web1', 'web2'];

/** Rounds every member commits; returns each round's mark LSNs, by member. */
async function committedRounds(
  c: Parameters<Member['flush']>[0],
  members: Member[],
  rounds: string[],
): Promise<number[][]> {
  const out: number[][] = [];
  for (const round of rounds) {
    const vms = members.map((m) => m.vm);
    const marks = members.map((m) => m.mark(round, vms, Date.now()));
    for (const m of members) m.commit(round);
    out.push(marks);
  }
  for (const m of members) await m.flush(c);
  const last = rounds.at(-1)!;
  for (const [i, m] of members.entries())
    await pointAt(c.processor.listen, m.vm, out.at(-1)![i]!, `multi-vm ${last}`, (p) => p.group?.point === last);
  return out;
}

async function failoverStates(listen: string): Promise<Record<string, string>> {
  return Object.fromEntries((await getStatus(listen)).vms.map((v) => [v.vm, v.failover]));
}

/** The processor of `c` again, over the same data dir, with a target planner that fails for `vm`. */
async function withPlannerFailingFor(c: ProcessorCase, vm: string): Promise<Processor> {
  await c.processor.close();
  return Processor.start({
    store: new FileReplicaStore(c.dataDir),
    cacheStoreUrl: c.cs.url,
    listenHost: '127.0.0.1',
    listenPort: 0,
    log: createLogger('test-processor', process.env['SR_LOG_LEVEL'] ?? 'silent'),
    options: { confirmIntervalMs: 20, backoff: { initialDelayMs: 10, maxDelayMs: 100 } },
    targetPlanner: {
      plan: (input) => {
        if (input.vm === vm) throw new SrError(ErrorCode.BAD_OPTION, `no address left for ${vm}`);
        return defaultTargetPlanner.plan(input);
      },
    },
  });
}

describe('failing a group over', () => {
  it('plans on every member first, then fails all of them over to their points of one group point', async () => {
    const { c, members } = await startGroup(cases, VMS);
    const listen = c.processor.listen;
    const [m1, m2] = await committedRounds(c, members, ['1.1', '1.2']);

    // Refused before anything changes: an unknown group, a point that is no group point, one nobody holds.
    const refusals: [string[], number, RegExp][] = [
      [['failover', '--group', 'nope', '--point', 'latest-multi-vm'], 2, /^sr: SR_GROUP_NOT_FOUND: .*nope/],
      [['failover', '--group', GROUP, '--point', '9.9'], 2, /^sr: SR_GROUP_POINT_NOT_FOUND: group point 9.9/],
      [['failover', '--group', GROUP, '--point', 'latest'], 2, /^sr: SR_BAD_OPTION: --point "latest" with --group/],
    ];
    for (const [args, code, message] of refusals) {
      const r = await sr(listen, args);
      expect(r.code, r.stderr).toBe(code);
      expect(r.stderr).toMatch(message);
    }
    const bad = await api<ApiError>(listen, 'POST', `/groups/${GROUP}/failover`, { point: 'latest' });
    expect([bad.status, bad.body.code]).toEqual([400, 'SR_BAD_OPTION']);

    // A member's point of 1.1 pruned: 1.1 is no group point any more, and the refusal names that member.
    const web2 = c.processor.get('web2')!.current!.points;
    const gone = web2.list().find((p) => p.group?.point === '1.1')!;
    expect(await web2.remove([gone.id], true)).toBe(true);
    const pruned = await api<ApiError>(listen, 'POST', `/groups/${GROUP}/failover`, { point: '1.1' });
    expect([pruned.status, pruned.body.code]).toEqual([404, 'SR_GROUP_POINT_NOT_FOUND']);
    expect(pruned.body.message).toMatch(/not held by web2/);
    expect(Object.values(await failoverStates(listen))).toEqual(['none', 'none', 'none']);
    const listed = await sr(listen, ['group-points', GROUP, '--json']);
    expect((JSON.parse(listed.stdout) as { id: string }[]).map((p) => p.id)).toEqual(['1.2']);

    // Test failover of the group, then its cleanup.
    const t = await sr(listen, [
      'test-failover',
      '--group',
      GROUP,
      '--point',
      'latest-multi-vm',
      '--network',
      'iso',
      '--json',
    ]);
    expect(t.code, t.stderr).toBe(0);
    const tested = JSON.parse(t.stdout) as { vms: Manifest[] };
    expect(Object.keys(tested)).toEqual(['vms']);
    expect(tested.vms.map((v) => [v.vm, v.kind, v.point.group?.point])).toEqual(
      VMS.map((vm) => [vm, 'test-failover', '1.2']),
    );
    for (const [i, m] of members.entries()) await expectDisksAt(tested.vms[i]!, m, m2![i]!);
    const again = await sr(listen, ['test-failover', '--group', GROUP, '--point', '1.2', '--network', 'iso']);
    expect(again.stderr).toMatch(/^sr: SR_FAILOVER_IN_PROGRESS: db1, web1, web2 of group shop already have/);
    const clean = await sr(listen, ['test-failover-cleanup', '--group', GROUP, '--json']);
    expect((JSON.parse(clean.stdout) as { vms: { vm: string }[] }).vms.map((v) => v.vm)).toEqual(VMS);
    const none = await sr(listen, ['test-failover-cleanup', '--group', GROUP]);
    expect(none.stderr).toMatch(/^sr: SR_NO_TEST_FAILOVER: /);

    // The failover itself.
    const f = await sr(listen, ['failover', '--group', GROUP, '--point', 'latest-multi-vm', '--json']);
    expect(f.code, f.stderr).toBe(0);
    const done = JSON.parse(f.stdout) as { vms: Manifest[] };
    expect(Object.keys(done)).toEqual(['vms']);
    expect(done.vms.map((v) => [v.vm, v.kind, v.point.kind, v.point.group])).toEqual(
      VMS.map((vm) => [vm, 'failover', 'multi-vm', { name: GROUP, point: '1.2' }]),
    );
    for (const [i, m] of members.entries()) await expectDisksAt(done.vms[i]!, m, m2![i]!);
    expect(done.vms.some((v) => v.split !== undefined)).toBe(false);
    expect(await failoverStates(listen)).toEqual({ db1: 'failed-over', web1: 'failed-over', web2: 'failed-over' });
    const twice = await api<ApiError>(listen, 'POST', `/groups/${GROUP}/failover`, { point: 'latest-multi-vm' });
    expect([twice.status, twice.body.code]).toEqual([409, 'SR_FAILED_OVER']);
    expect(m1).toHaveLength(3);
  });

  it('takes back the members already failed over when a later one fails: never half a group', async () => {
    const { c, members } = await startGroup(cases, VMS);
    await committedRounds(c, members, ['5.1']);
    const p = await withPlannerFailingFor(c, 'web2');
    try {
      const r = await api<ApiError>(p.listen, 'POST', `/groups/${GROUP}/failover`, { point: '5.1' });
      expect([r.status, r.body.code, r.body.message]).toEqual([400, 'SR_BAD_OPTION', 'no address left for web2']);
      expect(await failoverStates(p.listen)).toEqual({ db1: 'none', web1: 'none', web2: 'none' });
      // No disks, manifest or state of the taken-back failovers are left.
      const left = (await listTree(c.dataDir)).filter((f) => !f.endsWith('/') && !f.startsWith('replicas/'));
      expect(left.filter((f) => f.startsWith('failover/') || f.endsWith('failover.json'))).toEqual([]);
      // Taken back means replicating again: db1's next writes land.
      const db1 = members[0]!;
      db1.writes();
      await db1.flush(c);
      expectImages(await replicaBytes(c.dataDir, 'db1', DISKS), db1.w.images);
    } finally {
      await p.close();
    }
  });

  it('fails one member over alone, saying the group is split; a group failover is then refused, nothing changed', async () => {
    const { c, members } = await startGroup(cases, VMS);
    const listen = c.processor.listen;
    const [m1] = await committedRounds(c, members, ['3.1']);
    const one = await api<Manifest>(listen, 'POST', '/vms/web1/failover', { point: 'latest-multi-vm' });
    expect(one.status, JSON.stringify(one.body)).toBe(200);
    expect(one.body.point).toMatchObject({ lsn: m1![1], kind: 'multi-vm', group: { name: GROUP, point: '3.1' } });
    expect(one.body.split).toEqual({ group: GROUP, left: ['db1', 'web2'] });
    await expectDisksAt(one.body, members[1]!, m1![1]!);

    const r = await api<ApiError>(listen, 'POST', `/groups/${GROUP}/failover`, { point: '3.1' });
    expect([r.status, r.body.code]).toEqual([409, 'SR_FAILED_OVER']);
    expect(r.body.message).toMatch(/web1 of group shop is failed over already; nothing was changed/);
    expect(await failoverStates(listen)).toEqual({ db1: 'none', web1: 'failed-over', web2: 'none' });

    // The human output says it too, for a member failed over by its own group point id.
    const text = await sr(listen, ['failover', 'web2', '--point', '3.1']);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/group point shop 3\.1/);
    expect(text.stdout).toMatch(/the replication group shop is split: db1 still replicates from the source/);
  });
});
