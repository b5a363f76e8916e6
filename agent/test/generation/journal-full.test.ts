import { execFileSync } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { makeImage, requireTools, run, runOk, tempDir, waitUntil } from '@site-recovery/test';
import type { Agent } from '../../src/agent.js';
import { DISK_SIZE, startInProcess } from '../in-process-agent.js';
import { GenerationRig } from './generation-rig.js';

// The agent's own disk fills (something else took most of it while the cache-store was not acknowledging):
// the journal fails, and every write used to be refused until someone restarted the agent. It begins a
// new generation by itself instead (giving the old journal's space back first), again after a backoff
// while the disk stays full, and the VM writes again as soon as there is room.

let t: { dir: string; cleanup: () => Promise<void> };
let rig: GenerationRig | undefined;
let alone: Agent | undefined;
beforeAll(async () => {
  requireTools(['qemu-io']);
  t = await tempDir('journal-full');
});
afterEach(async () => {
  await rig?.close();
  await alone?.close().catch(() => undefined);
  rig = alone = undefined;
});
afterAll(async () => {
  for (const m of mounts) execFileSync('umount', ['-l', m]);
  await t.cleanup();
});

const mounts: string[] = [];

/** A small tmpfs at `<t.dir>/<name>` holding the agent's data dir, its image beside it on the ordinary disk. */
async function smallDataDir(name: string, vm: string, size: string): Promise<string> {
  const small = path.join(t.dir, name);
  await fsp.mkdir(small);
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', small]);
  mounts.push(small);
  const image = path.join(t.dir, `${vm}-real.img`);
  await makeImage(image, DISK_SIZE);
  await fsp.symlink(image, path.join(small, `${vm}.img`));
  return small;
}

const writes = (pattern: number, from: number, n: number): string[] =>
  Array.from({ length: n }, (_, i) => ['-c', `write -P ${pattern} ${from + i}M 1M`]).flat();

describe('a journal whose disk fills', () => {
  it('begins a new generation by itself, and once there is room the VM writes again and the replica converges', async () => {
    const small = await smallDataDir('small', 'full01', '16m');
    rig = await GenerationRig.start(small, 'full01', { journal: { maxBytes: 3 << 20, segmentBytes: 256 << 10 } });
    const r = rig;
    const first = (await r.drained('the first generation')).hello!.generation;
    r.acks = (c) => c.hello!.generation !== first;
    // Something else takes all but 1 MiB: the journal meets a full disk before its 3 MiB cap.
    const { bavail, bsize } = await fsp.statfs(small);
    const ballast = path.join(small, 'ballast');
    await fsp.writeFile(ballast, Buffer.alloc(bavail * bsize - (1 << 20), 1));

    const uri = `nbd://${r.agent.address.address}:${r.agent.address.port}/os`;
    // 4 MiB into 1: the journal fails part-way (those writes are answered with an error).
    await run('qemu-io', ['-f', 'raw', uri, ...writes(0x61, 0, 4)]);
    const g = await r.store.until('a new generation', () => {
      const s = r.agent.status().generation;
      return s?.id !== undefined && s.id !== first ? s : undefined;
    });
    expect(g.cause).toBe('journal-failed');
    expect(g.message).toMatch(/ENOSPC|no space/i);

    // Room again: the next generation (if the last one met the full disk too) keeps its journal.
    await fsp.rm(ballast);
    await r.store.until('a generation whose journal works', () => {
      const s = r.agent.status();
      return s.journal.failed === undefined && s.generation?.pending === undefined && s.generation?.id !== first;
    });
    await runOk('qemu-io', ['-f', 'raw', uri, ...writes(0x62, 10, 3)]);
    const last = await r.drained('the new generation');
    expect(await r.replicaDifference(last.hello!.generation)).toBe(-1);
  });

  it('without a cache-store: the journal starts over, writes go on, and the next start keeps the new journal', async () => {
    const small = await smallDataDir('alone', 'alone01', '6m');
    alone = (await startInProcess(small, 'alone01')).agent;
    const uri = `nbd://${alone.address.address}:${alone.address.port}/os`;
    // 8 MiB into 6: the journal fails part-way (a write answered with an error), then starts over by itself.
    const full = await run('qemu-io', ['-f', 'raw', uri, ...writes(0x71, 0, 8)]);
    expect(full.stdout + full.stderr).toMatch(/write failed/);
    await waitUntil(
      'the journal to start over',
      () => alone!.status().journal.failed === undefined || undefined,
      15_000,
      20,
    );
    await runOk('qemu-io', ['-f', 'raw', uri, ...writes(0x72, 10, 2)]);
    const lsn = alone.status().lsn;
    expect(lsn).toBeGreaterThan(0);
    await alone.close();
    alone = (await startInProcess(small, 'alone01')).agent;
    expect(alone.status().lsn, 'the journal of the last run is kept and replayed').toBe(lsn);
    expect(alone.status().generation).toBeUndefined();
  });
});
