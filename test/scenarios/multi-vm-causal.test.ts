import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CAUSAL_BLOCK,
  GroupEnv,
  ReplicationEnv,
  causalCutOf,
  requireTools,
  srJson,
  srOk,
  startCausalWriter,
  waitUntil,
  type CausalWriter,
  type SrManifest,
  type SrPoint,
} from '@site-recovery/test';

const NAMES = ['app1', 'app2', 'app3', 'app4', 'app5', 'app6', 'app7', 'app8'];
const SLOTS = 2048;
const GROUP_POINTS = 8;

type GroupPoint = SrPoint & { group?: { name: string; point: string } };

// Eight agents of one replication group on this machine, and an application whose every write depends
// on the one before it, on another VM. Every multi-VM point the group cuts while it runs, failed over as
// a group, must hold its writes 1..k and no write without its cause (issue #11).
describe('multi-VM consistency group', () => {
  let env: ReplicationEnv;
  let group: GroupEnv;
  let writer: CausalWriter | undefined;
  beforeAll(async () => {
    requireTools(['nbdsh']);
    env = await ReplicationEnv.start('multi-vm-causal');
    // app8 is farther away: its links carry a delay, so it hears each PREPARE well after the others. A
    // barrier that did not hold the replies of writes after their mark would let a write on app8 that
    // the cut keeps follow one on another VM that the cut drops.
    group = await GroupEnv.start(env, {
      group: 'shop',
      names: NAMES,
      diskBytes: SLOTS * CAUSAL_BLOCK,
      cutLinksOf: 'app8',
      linkDelayMs: 15,
    });
  });
  afterAll(async () => {
    await writer?.stop().catch(() => undefined);
    await group?.close();
    await env?.close();
  });

  it('cuts multi-VM points every second across 8 VMs, each a causally consistent cut of all of them', async () => {
    const p = env.processor;
    for (const name of NAMES) await env.drained(group.vm(name));
    await srOk(p, ['configure-group', 'shop', '--multi-vm-frequency', '1s']);
    writer = await startCausalWriter({
      uris: NAMES.map((n) => group.vm(n).agent.uri('os')),
      dir: env.dir,
      slots: SLOTS,
      rate: 300,
    });
    const groupPoints = async (): Promise<string[]> =>
      (await srJson<{ id: string }[]>(p, ['group-points', 'shop'])).map((x) => x.id);
    const startPoints = (await groupPoints()).length;
    await waitUntil(
      `${GROUP_POINTS} multi-VM points while the causal writer runs`,
      async () => ((await groupPoints()).length >= startPoints + GROUP_POINTS ? true : undefined),
      90_000,
      250,
    );
    const written = await writer.stop();
    writer = undefined;
    expect(written).toBeGreaterThan(0);

    // Every member holds every group point, under the same id (rounds go on meanwhile: a member read
    // later may hold newer ones).
    const ids = await groupPoints();
    for (const name of NAMES) {
      const pts = await srJson<GroupPoint[]>(p, ['points', name]);
      const theirs = pts.filter((x) => x.kind === 'multi-vm').map((x) => x.group!.point);
      expect(theirs.slice(0, ids.length), `multi-VM points of ${name}`).toEqual(ids);
    }

    // Each group point, test-failed-over as a group, is a causal cut; later points hold more writes.
    const cuts: number[] = [];
    for (const id of ids) {
      const drill = await srJson<{ vms: SrManifest[] }>(p, [
        ...['test-failover', '--group', 'shop', '--point', id, '--network', 'drill-net'],
      ]);
      expect(drill.vms.map((m) => m.vm).sort()).toEqual([...NAMES].sort());
      const images = NAMES.map((n) => drill.vms.find((m) => m.vm === n)!.disks[0]!.path);
      cuts.push(await causalCutOf(images, SLOTS));
      await srOk(p, ['test-failover-cleanup', '--group', 'shop']);
    }
    expect(cuts).toEqual([...cuts].sort((a, b) => a - b));
    expect(cuts.filter((k) => k > 0).length, `writes held by the points: ${cuts.join(' ')}`).toBeGreaterThan(
      GROUP_POINTS / 2,
    );

    // The group fails over to the newest of them; and the check can fail: that cut with one VM's
    // newest write taken out misses a cause.
    const failover = await srJson<{ vms: SrManifest[] }>(p, ['failover', '--group', 'shop', '--point', ids.at(-1)!]);
    const images = NAMES.map((n) => failover.vms.find((m) => m.vm === n)!.disks[0]!.path);
    const k = await causalCutOf(images, SLOTS);
    expect(k).toBe(cuts.at(-1));
    await expect(causalCutOf(await withoutOneCause(images, k), SLOTS)).rejects.toThrow(/but not write/);
  });

  /** Copies of the images with one VM's newest block zeroed, on a VM whose newest write is not write k. */
  async function withoutOneCause(images: string[], k: number): Promise<string[]> {
    const out: string[] = [];
    let done = false;
    for (const [i, image] of images.entries()) {
      const copy = path.join(env.dir, `tampered-${i}.img`);
      const data = await fsp.readFile(image);
      if (!done) {
        let last = -1;
        for (let s = 0; s < SLOTS && data[s * CAUSAL_BLOCK] !== 0; s++) last = s;
        if (last >= 0 && Number(data.readBigUInt64BE(last * CAUSAL_BLOCK + 8)) < k) {
          data.fill(0, last * CAUSAL_BLOCK, (last + 1) * CAUSAL_BLOCK);
          done = true;
        }
      }
      await fsp.writeFile(copy, data);
      out.push(copy);
    }
    if (!done) throw new Error('no VM whose newest write is older than the cut');
    return out;
  }
});
