import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AGENT_CLI, makeImage, nodeFlagsOf, run, startAgent, tempDir, type RunResult } from '@site-recovery/test';

let t: { dir: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  t = await tempDir('direct-cli');
  await makeImage(path.join(t.dir, 'd0.img'), 16 << 20);
});
afterAll(() => t.cleanup());

const disks = () => [{ id: 'd0', path: path.join(t.dir, 'd0.img') }];
const journalOf = (ready: Record<string, unknown>): Record<string, unknown> =>
  ready['journal'] as Record<string, unknown>;

/** Runs `sr-agent` on the test disk with `dataDir` and the journal options `args`, to completion. */
const runAgent = (dataDir: string, args: string[]): Promise<RunResult> =>
  run(process.execPath, [
    ...nodeFlagsOf(AGENT_CLI),
    AGENT_CLI,
    '--vm',
    'bad',
    '--disk',
    `d0=${disks()[0]!.path}`,
    '--data-dir',
    dataDir,
    ...args,
  ]);

describe('sr-agent journal options', () => {
  it('is on by default and says so in status; off keeps the journal in the page cache', async () => {
    const on = await startAgent({ vm: 'direct-on', disks: disks(), dataDir: path.join(t.dir, 'on') });
    expect(journalOf(on.ready)['directWrites']).toBe(true);
    expect(await on.stop()).toBe(0);
    const off = await startAgent({
      vm: 'direct-off',
      disks: disks(),
      dataDir: path.join(t.dir, 'off'),
      args: ['--journal-direct-writes', 'off'],
    });
    expect(journalOf(off.ready)['directWrites']).toBe(false);
    expect(await off.stop()).toBe(0);
  });

  it('refuses a size below one page with SR_BAD_OPTION and creates nothing', async () => {
    const dataDir = path.join(t.dir, 'bad');
    const r = await runAgent(dataDir, ['--journal-direct-writes', '512']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /SR_BAD_OPTION: --journal-direct-writes "512" must be "off" or a number of bytes, at least 4096/,
    );
    await expect(fsp.access(dataDir)).rejects.toThrow();
  });

  it('refuses a journal cap below four segments with SR_BAD_OPTION and creates nothing', async () => {
    const dataDir = path.join(t.dir, 'bad-cap');
    const r = await runAgent(dataDir, [
      '--journal-segment-bytes',
      String(8 << 20),
      '--journal-max-bytes',
      String(16 << 20),
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /SR_BAD_OPTION: --journal-max-bytes 16777216 must be at least 4 journal segments \(4 x 8388608\)/,
    );
    await expect(fsp.access(dataDir)).rejects.toThrow();
  });
});
