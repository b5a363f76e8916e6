import fsp from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'vitest';
import {
  JOURNAL_CLI,
  firstDifference,
  makeImage,
  runOk,
  startAgent,
  tempDir,
  type AgentProcess,
} from '@site-recovery/test';
import { SIZE, WRITABLE } from './raw-nbd.js';

// The agent the fuzz suites attack, and the check each ends with: whatever was thrown at it, it still
// serves real clients, its images hold exactly what valid requests wrote, and its journal rebuilds them.

export interface FuzzAgent {
  readonly agent: AgentProcess;
  readonly dir: string;
  /** Takes mutated streams that may hold valid writes; also the default export. */
  readonly chaos: string;
  /** Takes only requests a suite tracks in its model. */
  readonly modelImage: string;
  cleanup(): Promise<void>;
}

export async function startFuzzAgent(name: string): Promise<FuzzAgent> {
  const { dir, cleanup } = await tempDir(name);
  const [chaos, modelImage] = [path.join(dir, 'chaos.img'), path.join(dir, 'model.img')];
  for (const f of [chaos, modelImage]) await makeImage(f, SIZE);
  const agent = await startAgent({
    vm: 'fuzz',
    disks: [
      { id: 'chaos', path: chaos },
      { id: 'model', path: modelImage },
    ],
    dataDir: path.join(dir, 'data'),
  });
  return {
    agent,
    dir,
    chaos,
    modelImage,
    cleanup: async () => {
      if (agent.child.exitCode === null && agent.child.signalCode === null) await agent.kill();
      await cleanup();
    },
  };
}

/**
 * The agent is alive and serves real clients; after a clean stop the model image is exactly `model`,
 * the journal holds one record per valid write-type request to it (`modelWrites`), and replaying the
 * journal onto empty images rebuilds both images byte for byte.
 */
export async function expectIntactAfterFuzzing(f: FuzzAgent, model: Buffer, modelWrites: number): Promise<void> {
  const { agent } = f;
  expect([agent.child.exitCode, agent.child.signalCode]).toEqual([null, null]);
  expect((await runOk('nbdinfo', ['--size', agent.uri('model')])).stdout.trim()).toBe(String(SIZE));
  await runOk('qemu-io', ['-r', '-f', 'raw', '-c', `read -P 0 ${WRITABLE} ${SIZE - WRITABLE}`, agent.uri('model')]);
  await runOk('qemu-io', ['-r', '-f', 'raw', '-c', 'read 0 64k', agent.uri('chaos')]);
  expect(await agent.stop()).toBe(0);

  const onDisk = await fsp.readFile(f.modelImage);
  expect(
    onDisk.equals(model) ? -1 : onDisk.findIndex((b, i) => b !== model[i]),
    'first byte of the model image no valid request explains',
  ).toBe(-1);
  const dataDir = path.join(f.dir, 'data');
  const v = JSON.parse((await runOk('node', [JOURNAL_CLI, 'verify', '--data-dir', dataDir])).stdout) as {
    records: number;
    lastLsn: number;
    disks: { id: string; records: number }[];
  };
  expect(v.records).toBe(v.lastLsn);
  expect(
    v.disks.find((x) => x.id === 'model')?.records ?? 0,
    'journal records of the model disk = valid non-empty writes',
  ).toBe(modelWrites);

  const [rc, rm] = [path.join(f.dir, 'replay-chaos.img'), path.join(f.dir, 'replay-model.img')];
  for (const file of [rc, rm]) await makeImage(file, SIZE);
  await runOk('node', [JOURNAL_CLI, 'replay', '--data-dir', dataDir, '--disk', `chaos=${rc}`, '--disk', `model=${rm}`]);
  expect(await firstDifference(rc, f.chaos)).toBe(-1);
  expect(await firstDifference(rm, f.modelImage)).toBe(-1);
}
