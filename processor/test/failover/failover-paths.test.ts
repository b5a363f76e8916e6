import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Processor } from '../../src/processor.js';
import { api, deadUrl, listTree, readyReplica, startProcessor, useCaseDirs } from '../helpers.js';

// The failover state files are the processor's own, but whoever can write the data dir can edit them:
// nothing they say may send a delete outside the VM's own failover tree.

const VM = 'web01';
const DISKS = [{ id: 'os', size: 1 << 20 }];

let processor: Processor | undefined;
const newCaseDir = useCaseDirs('failover-paths', async () => {
  await processor?.close();
  processor = undefined;
});

/** A data dir with a replica of VM, and beside it (outside the data dir) a directory someone cares about. */
async function setup(): Promise<{ dataDir: string; precious: string; keep: string; stateDir: string }> {
  const caseDir = newCaseDir();
  const dataDir = path.join(caseDir, 'data');
  const precious = path.join(caseDir, 'precious');
  const keep = path.join(precious, 'keep.txt');
  await fsp.mkdir(precious, { recursive: true });
  await fsp.writeFile(keep, 'not the processor’s to delete\n');
  await readyReplica(dataDir, VM, DISKS);
  return { dataDir, precious, keep, stateDir: path.join(dataDir, 'vms', VM) };
}

/** Every file and directory under `dir` outside `replicas/` (the replica itself moves on), relative. */
async function treeOutsideReplicas(dir: string): Promise<string[]> {
  return (await listTree(dir)).filter((f) => !f.startsWith('replicas'));
}

describe('failover state files name no paths', () => {
  it('undoing an interrupted failover removes its disks under failover/VM/, not a directory the state file names', async () => {
    const { dataDir, precious, keep, stateDir } = await setup();
    // What the interrupted failover had written, and a state file edited to name another directory.
    const leftover = path.join(dataDir, 'failover', VM, 'web01-asr', 'os.img');
    await fsp.mkdir(path.dirname(leftover), { recursive: true });
    await fsp.writeFile(leftover, Buffer.alloc(4096, 1));
    await fsp.mkdir(stateDir, { recursive: true });
    await fsp.writeFile(
      path.join(stateDir, 'failover.json'),
      JSON.stringify({ state: 'in-progress', point: 'p-0-1', resourceGroup: 'web01-asr', dir: precious }),
    );

    processor = await startProcessor(dataDir, await deadUrl());

    expect(fs.existsSync(keep)).toBe(true);
    expect(fs.existsSync(leftover)).toBe(false);
    expect(fs.existsSync(path.join(stateDir, 'failover.json'))).toBe(false);
    expect(processor.status().vms.find((v) => v.vm === VM)?.failover).toBe('none');
  });

  it('refuses to start on a failover state whose resource group is not an id, and deletes nothing', async () => {
    const { dataDir, keep, stateDir } = await setup();
    await fsp.mkdir(stateDir, { recursive: true });
    await fsp.writeFile(
      path.join(stateDir, 'failover.json'),
      JSON.stringify({ state: 'in-progress', point: 'p-0-1', resourceGroup: '../../precious' }),
    );

    await expect(startProcessor(dataDir, await deadUrl())).rejects.toMatchObject({
      code: 'SR_STATE_MISMATCH',
      message: expect.stringContaining('failover.json') as unknown,
    });
    expect(fs.existsSync(keep)).toBe(true);
  });

  it('a test failover cleanup removes what the test failover created, whatever its state file says', async () => {
    const { dataDir, precious, keep, stateDir } = await setup();
    const emptyOutside = path.join(path.dirname(precious), 'empty');
    await fsp.mkdir(emptyOutside);
    processor = await startProcessor(dataDir, await deadUrl());
    const before = await treeOutsideReplicas(dataDir);

    const made = await api<{ disks: { path: string }[] }>(processor.listen, 'POST', `/vms/${VM}/test-failover`, {
      point: 'latest-processed',
      network: 'isolated',
    });
    expect(made.status, JSON.stringify(made.body)).toBe(200);
    const disk = made.body.disks[0]!.path;
    expect(fs.existsSync(disk)).toBe(true);
    // The state file edited to name a directory outside the data dir as the test VM's, and as created.
    const stateFile = path.join(stateDir, 'test-failover.json');
    const state = JSON.parse(await fsp.readFile(stateFile, 'utf8')) as Record<string, unknown>;
    await fsp.writeFile(stateFile, JSON.stringify({ ...state, dir: precious, created: [precious, emptyOutside] }));

    const cleaned = await api<{ removed: string[] }>(processor.listen, 'POST', `/vms/${VM}/test-failover-cleanup`);
    expect(cleaned.status, JSON.stringify(cleaned.body)).toBe(200);

    expect(fs.existsSync(keep)).toBe(true);
    expect(fs.existsSync(emptyOutside)).toBe(true);
    expect(fs.existsSync(disk)).toBe(false);
    expect(cleaned.body.removed).toContain(disk);
    expect(cleaned.body.removed.filter((p) => !p.startsWith(dataDir + path.sep))).toEqual([]);
    expect(await treeOutsideReplicas(dataDir)).toEqual(before);
  });
});
