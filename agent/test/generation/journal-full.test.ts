import { execFileSync } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { makeImage, requireTools, run, runOk, tempDir } from '@site-recovery/test';
import { DISK_SIZE } from '../in-process-agent.js';
import { GenerationRig } from './generation-rig.js';

// The agent's own disk fills (something else took most of it while the cache-store was not acknowledging):
// the journal fails, and every write used to be refused until someone restarted the agent. It begins a
// new generation by itself instead (giving the old journal's space back first), again after a backoff
// while the disk stays full, and the VM writes again as soon as there is room.

let t: { dir: string; cleanup: () => Promise<void> };
let mounted: string | undefined;
let rig: GenerationRig | undefined;
beforeAll(async () => {
  requireTools(['qemu-io']);
  t = await tempDir('journal-full');
});
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});
afterAll(async () => {
  if (mounted !== undefined) execFileSync('umount', ['-l', mounted]);
  await t.cleanup();
});

describe('a journal whose disk fills', () => {
  it('begins a new generation by itself, and once there is room the VM writes again and the replica converges', async () => {
    // The data dir on a 16 MiB file system; the image beside it on the ordinary disk, through a link.
    const small = path.join(t.dir, 'small');
    await fsp.mkdir(small);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', small]);
    mounted = small;
    const image = path.join(t.dir, 'full01-real.img');
    await makeImage(image, DISK_SIZE);
    await fsp.symlink(image, path.join(small, 'full01.img'));
    rig = await GenerationRig.start(small, 'full01', { journal: { maxBytes: 3 << 20, segmentBytes: 256 << 10 } });
    const r = rig;
    const first = (await r.drained('the first generation')).hello!.generation;
    r.acks = (c) => c.hello!.generation !== first;
    // Something else takes all but 1 MiB: the journal meets a full disk before its 3 MiB cap.
    const { bavail, bsize } = await fsp.statfs(small);
    const ballast = path.join(small, 'ballast');
    await fsp.writeFile(ballast, Buffer.alloc(bavail * bsize - (1 << 20), 1));

    const uri = `nbd://${r.agent.address.address}:${r.agent.address.port}/os`;
    const writes = (pattern: number, from: number, n: number): string[] =>
      Array.from({ length: n }, (_, i) => ['-c', `write -P ${pattern} ${from + i}M 1M`]).flat();
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
});
