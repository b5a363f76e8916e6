import { randomInt } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ReplicationEnv,
  getJson,
  runOk,
  sha256,
  srJson,
  srOk,
  waitUntil,
  type ProtectedVm,
  type SrManifest,
  type SrPoint,
} from '@site-recovery/test';

const SIZE = 32 << 20;
const PAGE = 4096;
const ROUNDS = 5;
/** Writes per round, `GAP_S` apart: a round lasts longer than the max delay, so scans overlap it. */
const WRITES = 20;
const GAP_S = 0.1;

interface WatchStatusDoc {
  mode: { state: string };
  lsn: number;
  watch: {
    scans: number;
    cleanScans: number;
    lastScan?: { clean: boolean; startedAt: string };
    lastCleanScan?: { endedAt: string; lsn: number };
  };
}

/** One writer process per round: dd at random offsets, conv=notrunc, never idle for the debounce. */
async function writeRound(image: string): Promise<void> {
  const writes = Array.from({ length: WRITES }, () => {
    const pages = randomInt(1, 9);
    const seek = randomInt(0, SIZE / PAGE - pages);
    return `dd if=/dev/urandom of=${image} bs=${PAGE} seek=${seek} count=${pages} conv=notrunc status=none`;
  });
  await runOk('sh', ['-c', writes.join(` && sleep ${GAP_S} && `)]);
}

// An image the agent does not front: another process writes the file while the agent watches it. The
// replica must converge byte for byte, and every recovery point must be a state the image really had at
// a moment no write was under way (here: between rounds), never the middle of a scan that overlapped one.
describe('watch mode', () => {
  let env: ReplicationEnv;
  let vm: ProtectedVm;
  beforeAll(async () => {
    env = await ReplicationEnv.start('watch');
  });
  afterAll(() => env?.close());

  it('replicates an image written with dd behind its back; points only at idle moments', async () => {
    const extents = [0, 5, 12, 20].map((mb) => ({ offset: mb << 20, length: 2 << 20 }));
    vm = await env.protect('files01', [{ id: 'data', size: SIZE, extents }], {
      nbd: false,
      args: ['--mode', 'watch', '--watch-debounce', '1500ms', '--watch-max-delay', '1s'],
    });
    const image = vm.disks[0]!.path;
    const status = (): Promise<WatchStatusDoc> => getJson(vm.statusUrl) as Promise<WatchStatusDoc>;
    expect(vm.agent.ready['nbd']).toBeUndefined();
    expect((await status()).mode.state).toBe('watch');
    const p = env.processor;
    await srOk(p, [
      'configure',
      'files01',
      '--crash-consistent-frequency',
      '1s',
      '--retention',
      '1h',
      '--thinning',
      'none',
    ]);

    // The image as it stands between rounds: the only states a point may hold.
    const idle = new Set([await sha256(image)]);
    for (let round = 0; round < ROUNDS; round++) {
      await writeRound(image);
      const ended = Date.now();
      idle.add(await sha256(image));
      await waitUntil(
        `a clean scan after round ${round}`,
        async () => {
          const c = (await status()).watch.lastCleanScan;
          return c !== undefined && Date.parse(c.endedAt) > ended ? c : undefined;
        },
        30_000,
        100,
      );
    }

    await env.drained(vm);
    expect(await env.compare(vm)).toEqual([]);
    const s = await status();
    // The max delay made scans run while dd wrote: they were not clean, and no point came of them.
    expect(s.watch.scans).toBeGreaterThan(s.watch.cleanScans);
    expect(s.watch.cleanScans).toBeGreaterThanOrEqual(ROUNDS);

    const points = await srJson<SrPoint[]>(p, ['points', 'files01']);
    expect(points.length).toBeGreaterThanOrEqual(3);
    // The replica is at the last clean scan: "now" is cut there, and holds the image as it is.
    const latest = await srJson<SrManifest>(p, ['test-failover', 'files01', '--point', 'latest', '--network', 'iso']);
    expect(await sha256(latest.disks[0]!.path)).toBe(await sha256(image));
    await srOk(p, ['test-failover-cleanup', 'files01']);
    for (const point of points) {
      const m = await srJson<SrManifest>(p, ['test-failover', 'files01', '--point', point.id, '--network', 'iso']);
      const hash = await sha256(m.disks[0]!.path);
      expect({ point: point.id, lsn: point.lsn, idle: idle.has(hash) }).toEqual({
        point: point.id,
        lsn: point.lsn,
        idle: true,
      });
      await srOk(p, ['test-failover-cleanup', 'files01']);
    }
  });
});
