import { afterEach, describe, expect, it } from 'vitest';
import {
  GroupEnv,
  ReplicationEnv,
  requireTools,
  srJson,
  srOk,
  startBlockWriter,
  waitUntil,
  type BlockWriter,
  type SrPoint,
} from '@site-recovery/test';

const NAMES = ['m1', 'm2', 'm3', 'm4'];
const BLOCKS = 1024;
const HOLD_TIMEOUT_MS = 100;
/**
 * What a member's hold may run past its timeout on this busy two-core machine (timers, a loaded event
 * loop). The bound that matters: without the timeout the hold would last until the dead peer returned.
 */
const TIMER_SLACK_MS = 1500;

type GroupPoint = SrPoint & { group?: { name: string; point: string } };

// A coordinator killed, a member killed and a member stopped, each while a barrier is in the middle
// (a relay on the victim's links goes silent right after a PREPARE passed it): the other VMs' writes go
// on within the hold timeout, that round makes no group point, and rounds succeed again once the group
// is whole (issue #11).
describe('multi-VM barrier faults', () => {
  let env: ReplicationEnv | undefined;
  let group: GroupEnv | undefined;
  const writers = new Map<string, BlockWriter>();
  afterEach(async () => {
    await Promise.all([...writers.values()].map((w) => w.stop().catch(() => undefined)));
    writers.clear();
    await group?.close();
    await env?.close();
  });

  async function setUp(name: string, victim: string): Promise<{ env: ReplicationEnv; group: GroupEnv }> {
    requireTools(['nbdsh']);
    env = await ReplicationEnv.start(name);
    group = await GroupEnv.start(env, {
      group: 'tier',
      names: NAMES,
      diskBytes: BLOCKS * 4096,
      holdTimeout: `${HOLD_TIMEOUT_MS}ms`,
      cutLinksOf: victim,
    });
    for (const n of NAMES) await env.drained(group.vm(n));
    await srOk(env.processor, ['configure-group', 'tier', '--multi-vm-frequency', '1s']);
    for (const n of NAMES) {
      if (n === victim) continue;
      writers.set(n, await startBlockWriter({ uri: group.vm(n).agent.uri('os'), dir: env.dir, blocks: BLOCKS }));
    }
    return { env, group };
  }

  const groupPoints = async (e: ReplicationEnv, vm: string): Promise<string[]> =>
    (await srJson<GroupPoint[]>(e.processor, ['points', vm]))
      .filter((x) => x.kind === 'multi-vm')
      .map((x) => x.group!.point);

  async function aGroupPointAfter(e: ReplicationEnv, known: readonly string[], what: string): Promise<string> {
    return waitUntil(
      what,
      async () => (await groupPoints(e, NAMES[0]!)).find((id) => !known.includes(id)),
      60_000,
      250,
    );
  }

  /**
   * Every survivor's writer answers more writes, and each survivor ended the cut round within its hold
   * timeout: by an abort, or by a commit among the survivors themselves when the victim had marked
   * before it went (a coordinator's PREPARE is its READY). Either way the victim never committed, so
   * the round must make no group point. Returns the rounds the survivors ended.
   */
  async function survivorsGoOn(g: GroupEnv, victim: string): Promise<string[]> {
    const rounds = new Set<string>();
    for (const n of NAMES) {
      if (n === victim) continue;
      const before = (await writers.get(n)!.log()).blockOf.length;
      await waitUntil(
        `${n}'s writes to go on after the barrier was cut`,
        async () => ((await writers.get(n)!.log()).blockOf.length > before + 10 ? true : undefined),
        20_000,
        50,
      );
      const s = await waitUntil(
        `${n} to end the cut round`,
        async () => {
          const st = await g.groupStatus(n);
          return st.last !== undefined && st.holding === undefined ? st : undefined;
        },
        20_000,
        100,
      );
      expect(s.last!.holdMs, `${n}'s hold of the cut round`).toBeLessThanOrEqual(HOLD_TIMEOUT_MS + TIMER_SLACK_MS);
      rounds.add(s.last!.round);
    }
    return [...rounds];
  }

  async function noPointFor(e: ReplicationEnv, rounds: readonly string[]): Promise<void> {
    for (const n of NAMES) {
      const pts = await groupPoints(e, n);
      for (const r of rounds) expect(pts, `group points of ${n}`).not.toContain(r);
    }
  }

  it('kill -9 of the coordinator mid-barrier: the others go on, a new coordinator takes over, and the old one rejoins', async () => {
    const { env: e, group: g } = await setUp('multi-vm-coordinator-killed', 'm1');
    const known = [await aGroupPointAfter(e, [], 'a first group point')];
    const before = await g.groupStatus('m2');
    expect(before.coordinator).toBe('m1');
    await Promise.all([...g.cutters.values()].map((c) => c.arm('prepare')));
    await g.vm('m1').agent.kill();
    const cutRounds = await survivorsGoOn(g, 'm1');

    const next = await waitUntil(
      'm2 to coordinate the survivors with a newer term',
      async () => {
        const views = await Promise.all(['m2', 'm3', 'm4'].map((n) => g.groupStatus(n)));
        return views.every((v) => v.coordinator === 'm2') && views[0]!.term > before.term ? views[0] : undefined;
      },
      30_000,
      200,
    );
    // Without m1 the group is not whole: rounds fail, naming it.
    await waitUntil(
      'a round without m1 to fail naming it',
      async () => ((await g.groupStatus('m2')).lastFailure?.failedBy === 'm1' ? true : undefined),
      30_000,
      200,
    );
    await noPointFor(e, cutRounds);

    for (const c of g.cutters.values()) c.heal();
    await g.restart('m1');
    known.push(...(await groupPoints(e, 'm1')));
    const id = await aGroupPointAfter(e, known, 'a group point once m1 is back');
    for (const n of NAMES) expect(await groupPoints(e, n)).toContain(id);
    const after = await g.groupStatus('m3');
    expect(after.coordinator).toBe('m1');
    expect(after.term).toBeGreaterThan(next.term);
  });

  it('a member stopped (SIGSTOP) and then killed mid-barrier: the others go on, and rounds resume once it is back', async () => {
    const { env: e, group: g } = await setUp('multi-vm-member-faults', 'm4');
    const known = [await aGroupPointAfter(e, [], 'a first group point')];
    // The coordinator's PREPARE reaches m4 on the link m1 dials; then that link falls silent.
    const coordinatorLink = g.cutters.get('m1')!;

    await coordinatorLink.arm('prepare');
    g.vm('m4').agent.child.kill('SIGSTOP');
    const stoppedRounds = await survivorsGoOn(g, 'm4');
    g.vm('m4').agent.child.kill('SIGCONT');
    coordinatorLink.heal();
    known.push(...(await groupPoints(e, 'm1')));
    const resumed = await aGroupPointAfter(e, known, 'a group point once m4 runs again');
    await noPointFor(e, stoppedRounds);
    for (const n of NAMES) expect(await groupPoints(e, n)).toContain(resumed);

    await coordinatorLink.arm('prepare');
    await g.vm('m4').agent.kill();
    const killedRounds = await survivorsGoOn(g, 'm4');
    for (const c of g.cutters.values()) c.heal();
    await g.restart('m4');
    known.push(...(await groupPoints(e, 'm1')));
    const back = await aGroupPointAfter(e, known, 'a group point once m4 is restarted');
    await noPointFor(e, killedRounds);
    for (const n of NAMES) expect(await groupPoints(e, n)).toContain(back);
  });
});
