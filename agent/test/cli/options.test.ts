import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AGENT_CLI,
  makeImage,
  nodeFlagsOf,
  requireTools,
  run,
  startAgent,
  tempDir,
  type RunResult,
} from '@site-recovery/test';

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
      /SR_BAD_OPTION: --journal-direct-writes "512" must be "off" or a size of at least one page, 4K \(4096 bytes\)/,
    );
    await expect(fsp.access(dataDir)).rejects.toThrow();
  });

  it('refuses a journal cap below four segments with SR_BAD_OPTION saying what to change, and creates nothing', async () => {
    const dataDir = path.join(t.dir, 'bad-cap');
    const r = await runAgent(dataDir, ['--journal-segment-bytes', '8M', '--journal-max-bytes', String(16 << 20)]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /SR_BAD_OPTION: --journal-max-bytes 16M holds only 2 segments of 8M \(--journal-segment-bytes\); .* at least 4: raise --journal-max-bytes to 32M, lower --journal-segment-bytes to 4M, or leave --journal-segment-bytes out \(it then follows the cap: 2M\)/,
    );
    await expect(fsp.access(dataDir)).rejects.toThrow();
  });

  it.each([
    [['--journal-max-bytes', '4MB'], /--journal-max-bytes "4MB" is ambiguous .* write 4M or 4MiB;/],
    [['--journal-max-bytes', '2M'], /--journal-max-bytes "2M" is too small: it must be at least 4M \(4194304 bytes\)/],
    [['--journal-max-bytes', '1.1K'], /--journal-max-bytes "1.1K" is not a whole number of bytes/],
    [['--journal-segment-bytes', 'lots'], /--journal-segment-bytes "lots" is not a size; write bytes, or a number/],
    [['--max-bandwidth', '-5M'], /--max-bandwidth "-5M" is negative/],
    [['--max-bandwidth', '20M'], /--max-bandwidth limits replication: add --cache-store URL/],
  ])('refuses %j with SR_BAD_OPTION naming the option, and creates nothing', async (args, message) => {
    const dataDir = path.join(t.dir, 'bad-size');
    const r = await runAgent(dataDir, args);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`SR_BAD_OPTION: ${message.source}`));
    await expect(fsp.access(dataDir)).rejects.toThrow();
  });

  it('takes a segment size from the config file as a size string', async () => {
    const config = path.join(t.dir, 'sized.json');
    await fsp.writeFile(config, JSON.stringify({ journalSegmentBytes: '2M' }));
    const a = await startAgent({
      vm: 'sized',
      disks: disks(),
      dataDir: path.join(t.dir, 'sized'),
      args: ['--config', config, '--journal-max-bytes', '16M'],
    });
    expect(journalOf(a.ready)).toMatchObject({ maxBytes: 16 << 20, segmentBytes: 2 << 20 });
    expect(await a.stop()).toBe(0);
  });

  it('runs on a 4M cap alone: the segment size follows the cap and writes four times the cap go through', async () => {
    requireTools(['qemu-io']);
    const a = await startAgent({
      vm: 'small-cap',
      disks: disks(),
      dataDir: path.join(t.dir, 'small-cap'),
      args: ['--journal-max-bytes', '4M', '--status', '127.0.0.1:0'],
    });
    try {
      expect(journalOf(a.ready)).toMatchObject({ maxBytes: 4 << 20, segmentBytes: 1 << 20 });
      // 16 MiB in 512 KiB writes: past half the cap the agent (which never replicated) checkpoints and lets
      // go of the oldest segments, so the writes go on; with no segment closed below that, they would wait.
      const writes = Array.from({ length: 32 }, (_, i) => ['-c', `write -P ${i + 1} ${i * 512}k 512k`]).flat();
      const w = await run('qemu-io', ['-f', 'raw', a.uri('d0'), ...writes], { timeoutMs: 60_000 });
      expect(w.code, w.stderr).toBe(0);
      expect(w.stdout).not.toMatch(/error|failed/i);
      const s = (await (await fetch(`http://${String(a.ready['status'])}/status`)).json()) as {
        journal: { firstLsn: number; lastLsn: number; bytes: number };
      };
      expect(s.journal.lastLsn).toBe(32);
      expect(s.journal.firstLsn, 'segments were released').toBeGreaterThan(1);
      expect(await a.stop()).toBe(0);
    } finally {
      await a.kill();
    }
    const image = await fsp.readFile(disks()[0]!.path);
    for (let i = 0; i < 32; i++) expect(image[i * 512 * 1024 + 7]).toBe(i + 1);
  });
});
