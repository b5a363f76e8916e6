import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  GroupEnv,
  ReplicationEnv,
  freePort,
  requireTools,
  srJson,
  srOk,
  waitUntil,
  type SrPoint,
} from '@site-recovery/test';

const BLOCKS = 1024;

type GroupPoint = { id: string; members: { vm: string; point: string }[] };

// Members join and leave a replication group by restarting their agents with new --peers: replication
// goes on in the same generation (no resync), every point each VM had stays, and the group's points
// follow its membership (issue #11).
describe('replication group membership', () => {
  let env: ReplicationEnv;
  let group: GroupEnv;
  beforeAll(async () => {
    requireTools(['nbdsh']);
    env = await ReplicationEnv.start('multi-vm-membership');
    group = await GroupEnv.start(env, { group: 'crm', names: ['c1', 'c2', 'c3'], diskBytes: BLOCKS * 4096 });
  });
  afterAll(async () => {
    await group?.close();
    await env?.close();
  });

  const points = (vm: string): Promise<SrPoint[]> => srJson<SrPoint[]>(env.processor, ['points', vm]);
  const groupPoints = (): Promise<GroupPoint[]> => srJson<GroupPoint[]>(env.processor, ['group-points', 'crm']);
  const generationOf = async (vm: string): Promise<string> =>
    (await env.agentStatus(group.vm(vm))).replication!.generation;

  /** Waits for a group point of exactly `members`, newer than every point in `seen`. */
  async function nextGroupPoint(members: string[], seen: readonly string[]): Promise<GroupPoint> {
    return waitUntil(
      `a group point of ${members.join(', ')}`,
      async () =>
        (await groupPoints()).find(
          (g) =>
            !seen.includes(g.id) &&
            g.members
              .map((m) => m.vm)
              .sort()
              .join() === members.join(),
        ),
      60_000,
      250,
    );
  }

  /** Restarts a member's agent with `args` in place of its group options; it keeps its data dir. */
  async function restartWith(vm: string, args: string[]): Promise<void> {
    await group.vm(vm).agent.stop();
    await env.startAgentFor(group.vm(vm), { args });
  }

  it('lets a VM join and leave without a resync or the loss of any point', async () => {
    const p = env.processor;
    for (const n of ['c1', 'c2', 'c3']) await env.drained(group.vm(n));
    await srOk(p, ['configure-group', 'crm', '--multi-vm-frequency', '1s']);
    const first = await nextGroupPoint(['c1', 'c2', 'c3'], []);

    // c4 joins: it starts in the group, and each member learns of it by a restart with the new --peers.
    const c4 = await env.protect('c4', [{ id: 'os', size: BLOCKS * 4096 }]);
    await env.drained(c4);
    group.vms.set('c4', c4);
    const listen = new Map<string, string>();
    for (const n of ['c1', 'c2', 'c3', 'c4']) listen.set(n, `127.0.0.1:${await freePort()}`);
    const groupArgs = (n: string, members: string[]): string[] => [
      ...['--group', 'crm', '--group-secret-file', group.secretFile, '--group-listen', listen.get(n)!],
      ...['--peers', members.map((m) => `${m}=${listen.get(m)!}`).join(',')],
    ];
    const all = ['c1', 'c2', 'c3', 'c4'];
    const before = new Map<string, { generation: string; points: string[] }>();
    for (const n of all)
      before.set(n, { generation: await generationOf(n), points: (await points(n)).map((x) => x.id) });
    for (const n of all) await restartWith(n, groupArgs(n, all));
    const seen = (await groupPoints()).map((g) => g.id);
    const joined = await nextGroupPoint(all, seen);
    expect(joined.members.map((m) => m.vm).sort()).toEqual(all);

    // c3 leaves: it runs on alone, the others drop it from --peers.
    const rest = ['c1', 'c2', 'c4'];
    await restartWith('c3', []);
    for (const n of rest) await restartWith(n, groupArgs(n, rest));
    const left = await nextGroupPoint(
      rest,
      (await groupPoints()).map((g) => g.id),
    );
    expect(left.members.map((m) => m.vm).sort()).toEqual(rest);

    for (const n of all) {
      // The same generation throughout: no member was resynced by joining or leaving.
      expect(await generationOf(n), `generation of ${n}`).toBe(before.get(n)!.generation);
      const now = (await points(n)).map((x) => x.id);
      for (const id of before.get(n)!.points) expect(now, `points of ${n}`).toContain(id);
    }
    // The points cut while c3 was a member are still its multi-VM points, under the group's ids.
    const c3Points = await srJson<(SrPoint & { group?: { point: string } })[]>(p, ['points', 'c3']);
    const c3Groups = c3Points.filter((x) => x.kind === 'multi-vm').map((x) => x.group!.point);
    expect(c3Groups).toContain(first.id);
    expect(c3Groups).toContain(joined.id);
    expect(c3Groups).not.toContain(left.id);
    for (const n of all) await env.drained(group.vm(n));
    for (const n of all) expect(await env.compare(group.vm(n)), `replica of ${n}`).toEqual([]);
  });
});
