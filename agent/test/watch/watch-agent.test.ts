import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { getJson, makeImage, startCacheStore, tempDir, waitUntil, type ServiceProcess } from '@site-recovery/test';
import { writeCheckpoint } from '../../src/agent-state.js';
import { HealthCode } from '../../src/health.js';
import { WatchAgent } from '../../src/watch/watch-agent.js';
import type { WatchAgentStatus } from '../../src/watch/watch-status.js';
import { startInProcess } from '../in-process-agent.js';
import { log, writeAt } from './scan-fixture.js';

const MiB = 1 << 20;

describe('watch-mode agent', () => {
  let t: { dir: string; cleanup: () => Promise<void> };
  let cs: ServiceProcess;
  let agent: WatchAgent | undefined;
  beforeAll(async () => {
    t = await tempDir('watch-agent');
    cs = await startCacheStore(path.join(t.dir, 'cs'));
  });
  afterEach(async () => {
    await agent?.close();
    agent = undefined;
  });
  afterAll(async () => {
    await cs?.stop();
    await t?.cleanup();
  });

  const start = async (vm: string, size: number): Promise<{ a: WatchAgent; image: string; dataDir: string }> => {
    const image = path.join(t.dir, `${vm}.img`);
    await makeImage(image, size, [{ offset: MiB / 2, length: MiB }]);
    const dataDir = path.join(t.dir, `${vm}-data`);
    agent = await WatchAgent.start({
      vm,
      disks: [{ id: 'os', path: image }],
      dataDir,
      replication: { url: `ws://${cs.listen}` },
      watch: { debounceMs: 100, retry: { initialDelayMs: 50, maxDelayMs: 200 } },
      log,
    });
    return { a: agent, image, dataDir };
  };

  /** The agent's status once its copy is done, a clean scan marked it and the cache-store holds everything. */
  const settled = (a: WatchAgent, what: string, also: (s: WatchAgentStatus) => boolean = () => true) =>
    waitUntil(
      what,
      () => {
        const s = a.status();
        const r = s.replication;
        return r?.initialCopy.state === 'done' &&
          r.stream.ackedLsn === s.lsn &&
          s.watch.lastCleanScan?.lsn === s.lsn &&
          also(s)
          ? s
          : undefined;
      },
      20_000,
      20,
    );

  it('says watch mode in its status; a disk resized under it begins a new generation with the new size', async () => {
    const { a, image } = await start('resize01', 2 * MiB);
    const first = await settled(a, 'the first clean scan, shipped');
    expect(first.mode.state).toBe('watch');
    expect(first.watch).toMatchObject({ blockBytes: 64 * 1024, debounceMs: 100, state: 'idle' });
    expect(first.watch.lastScan).toMatchObject({ clean: true });
    expect(a.health()).toMatchObject({ ok: true, problems: [] });
    const gen1 = first.replication!.generation;

    await fsp.truncate(image, 3 * MiB);
    const after = await settled(a, 'a new generation of the resized disk, copied and shipped', (s) =>
      s.replication!.generation !== gen1 ? true : false,
    );
    expect(after.watch.newGeneration?.reason).toBe('disk os was resized from 2097152 to 3145728 bytes');
    expect(after.watch.disks).toEqual([{ id: 'os', path: image, size: 3 * MiB }]);
    const listed = (await getJson(`http://${cs.listen}/status`)) as {
      vms: { vm: string; generation: string; disks: { size: number }[]; mode?: string }[];
    };
    expect(listed.vms.find((v) => v.vm === 'resize01')).toMatchObject({
      generation: after.replication!.generation,
      disks: [{ size: 3 * MiB }],
      mode: 'watch',
    });
  });

  it('retries scans of an image that went away, says so in status and health, and follows it once it is back', async () => {
    const { a, image } = await start('gone01', 2 * MiB);
    await settled(a, 'the first clean scan, shipped');
    await fsp.rename(image, `${image}.away`);
    const failing = await waitUntil(
      'a failed scan, shown in health',
      () => {
        const h = a.health();
        return !h.ok && a.status().watch.failure !== undefined ? h : undefined;
      },
      20_000,
      20,
    );
    expect(failing.problems.map((p) => p.code)).toEqual([HealthCode.WATCH_SCAN_FAILING]);
    expect(a.status().watch.failure).toMatchObject({ code: 'ENOENT' });

    await fsp.rename(`${image}.away`, image);
    const back = await settled(a, 'scans reading the image again', (s) => s.watch.failure === undefined);
    expect(a.health().ok).toBe(true);
    // A change after its return is seen (not only by the rescan interval, ten minutes away).
    await writeAt(image, 1536 * 1024, Buffer.alloc(4096, 7));
    const moved = await settled(a, 'the change after the return shipped', (s) => s.lsn > back.lsn);
    expect(moved.watch.lastScan?.blocksChanged).toBeGreaterThanOrEqual(1);
  });

  it('an NBD agent started on a data dir last used in watch mode redoes nothing from its journal', async () => {
    const { a, image, dataDir } = await start('switch01', 2 * MiB);
    await settled(a, 'the first clean scan, shipped');
    await a.close();
    agent = undefined;
    // The image moves on after the watch agent stopped; its journal holds the old blocks, and (as after a
    // crash before the sums were saved) its checkpoint does not cover them.
    await writeAt(image, MiB / 2, Buffer.alloc(MiB, 9));
    await writeCheckpoint(dataDir, 0);
    const before = await fsp.readFile(image);
    const { agent: nbd } = await startInProcess(t.dir, 'switch01', {});
    try {
      expect(nbd.status().journal.lastLsn).toBe(0);
      expect((await fsp.readFile(image)).equals(before)).toBe(true);
      const state = JSON.parse(await fsp.readFile(path.join(dataDir, 'agent-state.json'), 'utf8')) as object;
      expect(state).not.toHaveProperty('mode');
    } finally {
      await nbd.close();
    }
  });
});
