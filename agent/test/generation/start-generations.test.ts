import fsp from 'node:fs/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { makeImage, tempDir } from '@site-recovery/test';
import { SEGMENT_HEADER_BYTES, decodeRecord } from '../../src/journal/format.js';
import { checkpointFile, journalDir, parseSegmentFileName, retiredJournalDir, stateFile } from '../../src/names.js';
import { DISK_SIZE } from '../in-process-agent.js';
import { GenerationRig } from './generation-rig.js';

// What a start finds that keeps the stream from continuing: each begins a new generation by itself
// (it used to be refused, or went unnoticed), which the status explains, and whose stream alone
// rebuilds the source on a replica that started as zeroes.

let t: { dir: string; cleanup: () => Promise<void> };
let rig: GenerationRig | undefined;
beforeAll(async () => {
  t = await tempDir('start-generations');
});
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});
afterAll(() => t.cleanup());

/** Writes `pattern` over `length` bytes at `offset` of the image, behind the agent's back. */
async function scribble(image: string, offset: number, length: number, pattern: number): Promise<void> {
  const fh = await fsp.open(image, 'r+');
  await fh.write(Buffer.alloc(length, pattern), 0, length, offset);
  await fh.close();
}

/** A rig that replicated once (one generation drained) and was stopped cleanly; returns that generation. */
async function replicatedOnce(vm: string): Promise<{ r: GenerationRig; generation: string }> {
  const image = `${t.dir}/${vm}.img`; // where startInProcess looks for it
  await makeImage(image, DISK_SIZE);
  await scribble(image, 3 << 20, 3 << 20, 0x5a);
  // Small segments: the copy's three 1 MiB records land in segments of their own.
  rig = await GenerationRig.start(t.dir, vm, { journal: { segmentBytes: 256 << 10 } });
  const first = await rig.drained('the first generation');
  await rig.agent.close();
  return { r: rig, generation: first.hello!.generation };
}

/** Restarts the agent and checks it began a new generation for `cause`, which then rebuilds the source. */
async function expectNewGeneration(r: GenerationRig, before: string, cause: string): Promise<string> {
  await r.restart();
  const s = r.agent.status().generation!;
  expect(s.cause).toBe(cause);
  expect(s.id).not.toBe(before);
  expect(s.previous[0]).toMatchObject({ id: before, cause: 'new-data-dir' });
  const c = await r.drained('the new generation');
  expect(c.hello!.generation).toBe(s.id);
  expect(await r.replicaDifference(s.id!)).toBe(-1);
  return s.message!;
}

describe('an agent start that cannot continue the generation', () => {
  it('begins a new one when a disk was resized (no longer refused with SR_STATE_MISMATCH)', async () => {
    const { r, generation } = await replicatedOnce('resized');
    await fsp.truncate(r.image, DISK_SIZE * 2);
    await scribble(r.image, DISK_SIZE + (1 << 20), 4096, 0x77);
    const message = await expectNewGeneration(r, generation, 'disk-resized');
    expect(message).toBe(`disk os was ${DISK_SIZE} bytes and is ${DISK_SIZE * 2} now`);
    expect(r.latest()!.hello!.disks).toEqual([{ id: 'os', size: DISK_SIZE * 2 }]);
    const state = JSON.parse(await fsp.readFile(stateFile(r.dataDir), 'utf8')) as { disks: { size: number }[] };
    expect(state.disks[0]!.size).toBe(DISK_SIZE * 2);
  });

  it('begins a new one when another file of the same size is behind the disk path', async () => {
    const { r, generation } = await replicatedOnce('replaced');
    const ino = (await fsp.stat(r.image)).ino;
    await fsp.rm(r.image);
    await makeImage(r.image, DISK_SIZE);
    await scribble(r.image, 1 << 20, 1 << 20, 0x33);
    // ext4 hands the freed inode number to the next file: only the birth time tells them apart.
    const message = await expectNewGeneration(r, generation, 'disk-replaced');
    expect(message).toMatch(/^disk os is another file than before \(inode \d+ born .*, now inode \d+ born .*\)$/);
    if ((await fsp.stat(r.image)).ino === ino) expect(message).toContain(`inode ${ino} born`);
  });

  it('begins a new one when a disk was written while the agent was stopped', async () => {
    const { r, generation } = await replicatedOnce('modified');
    // A cp over the image, a restore that keeps the inode. The kernel stamps times from a coarse clock,
    // so a write in the same tick as the agent's last one would leave the time as it was: write until it moves.
    const stamped = (
      JSON.parse(await fsp.readFile(checkpointFile(r.dataDir), 'utf8')) as { images: { mtimeNs: string }[] }
    ).images[0]!.mtimeNs;
    for (;;) {
      await scribble(r.image, 5 << 20, 4096, 0x44);
      if ((await fsp.stat(r.image, { bigint: true })).mtimeNs.toString() !== stamped) break;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const message = await expectNewGeneration(r, generation, 'disk-modified');
    expect(message).toMatch(/^disk os was written while the agent was stopped/);
  });

  it('continues the generation after a clean stop, and after a crash (no times recorded to compare)', async () => {
    const { r, generation } = await replicatedOnce('intact');
    await r.restart();
    expect(r.agent.status().generation!.id).toBe(generation);
    await r.agent.close();
    // A crash leaves the checkpoint of a running agent, which records no image times.
    const c = JSON.parse(await fsp.readFile(checkpointFile(r.dataDir), 'utf8')) as Record<string, unknown>;
    expect(c['images']).toBeDefined();
    delete c['images'];
    await fsp.writeFile(checkpointFile(r.dataDir), JSON.stringify(c));
    await r.restart();
    expect(r.agent.status().generation!.id).toBe(generation);
    expect(r.agent.status().generation!.previous).toEqual([]);
  });

  it('begins a new one when the journal is damaged where it was synced (it used to refuse to start)', async () => {
    const { r, generation } = await replicatedOnce('damaged');
    const dir = journalDir(r.dataDir);
    const name = (await fsp.readdir(dir)).filter((n) => parseSegmentFileName(n) !== undefined).sort()[0]!;
    const buf = await fsp.readFile(`${dir}/${name}`);
    let at = SEGMENT_HEADER_BYTES;
    for (;;) {
      const d = decodeRecord(buf, at, 1 << 25);
      if (!d.ok) throw new Error(`no record with data in ${name}`);
      if (d.record?.data !== undefined && d.record.data.length > 0) break;
      at += d.bytes;
    }
    buf[at + 64] = buf[at + 64]! ^ 0xff;
    await fsp.writeFile(`${dir}/${name}`, buf);
    const message = await expectNewGeneration(r, generation, 'journal-damaged');
    expect(message).toContain(name);
  });

  it('begins a new one when a switch at run time was interrupted by a crash, with or without its cause saved', async () => {
    const { r, generation } = await replicatedOnce('interrupted');
    // The crash came right after the journal was renamed aside, before the state could say why.
    await fsp.rename(journalDir(r.dataDir), retiredJournalDir(r.dataDir));
    await expectNewGeneration(r, generation, 'switch-interrupted');
    expect(await fsp.stat(retiredJournalDir(r.dataDir)).catch(() => undefined)).toBeUndefined();

    // Again, the cause saved this time (pendingGeneration): that is the one shown.
    const current = r.agent.status().generation!.id!;
    await r.agent.close();
    const state = JSON.parse(await fsp.readFile(stateFile(r.dataDir), 'utf8')) as Record<string, unknown>;
    delete state['replication'];
    state['pendingGeneration'] = { cause: 'bitmap-untrusted', message: 'saved before the crash', at: 'x' };
    await fsp.writeFile(stateFile(r.dataDir), JSON.stringify(state));
    await fsp.rename(journalDir(r.dataDir), retiredJournalDir(r.dataDir));
    await r.restart();
    const g = r.agent.status().generation!;
    expect(g).toMatchObject({ cause: 'bitmap-untrusted', message: 'saved before the crash' });
    expect(g.previous[0]!.id).toBe(current);
    const c = await r.drained('the generation after the second crash');
    expect(await r.replicaDifference(c.hello!.generation)).toBe(-1);
  });
});
