import fsp from 'node:fs/promises';
import path from 'node:path';
import type { DiskInfo } from '@site-recovery/shared';
import { describe, expect, it } from 'vitest';
import { CacheStoreFixture } from '../cache-store-fixture.js';
import type { TestAgent } from '../test-agent.js';
import { Workload, chunks } from '../workload.js';
import {
  MiB,
  cliArgs,
  firstDiff,
  readState,
  replicaFile,
  runCli,
  startCli,
  useCaseDirs,
  vmStatus,
  type CliProcess,
} from '../helpers.js';

const VM = 'db01';
const DISKS: DiskInfo[] = [
  { id: 'os', size: 64 * MiB },
  { id: 'data', size: 16 * MiB },
];

const caseDir = useCaseDirs('processor-cli');

/** Stores records `from`..`to` in batches of `per`; resolves once the cache-store has acknowledged them all. */
async function feed(agent: TestAgent, w: Workload, from: number, to: number, per: number): Promise<void> {
  for (const c of chunks(w.range(from, to), per)) await agent.send(c);
  await agent.ackedThrough(to);
}

describe('sr-processor CLI', () => {
  it('explains every option in --help', async () => {
    const r = await runCli(['--help']);
    expect(r.code).toBe(0);
    for (const opt of [
      '--listen',
      '--cache-store',
      '--data-dir',
      '--confirm-interval-ms',
      '--confirm-bytes',
      '--inline-write-max-bytes',
      '--reconnect-initial-ms',
      '--reconnect-max-ms',
      '--auth-secret-file',
      '--cache-store-token-file',
      '--insecure',
    ]) {
      expect(r.stdout).toContain(opt);
    }
    expect(r.stdout).toContain('"event":"ready"');
  });

  it('refuses missing or malformed options with SR_BAD_OPTION and exit code 2, naming the option', async () => {
    const dataDir = caseDir();
    // --insecure, so each is refused for the option it names and not for the missing credentials.
    for (const [args, names] of [
      [['--data-dir', dataDir], /--cache-store ws:\/\/HOST:PORT\/ is required/],
      [['--cache-store', 'ws://127.0.0.1:1/'], /--data-dir DIR is required/],
      [['--cache-store', 'http://127.0.0.1:1/', '--data-dir', dataDir], /--cache-store "http:.*must start with ws:/],
      [['--cache-store', 'ws://127.0.0.1:1/', '--data-dir', dataDir, '--listen', 'nowhere'], /--listen "nowhere"/],
      [
        ['--cache-store', 'ws://127.0.0.1:1/', '--data-dir', dataDir, '--confirm-interval-ms', '0'],
        /--confirm-interval-ms "0"/,
      ],
      [
        ['--cache-store', 'ws://127.0.0.1:1/', '--data-dir', dataDir, '--confirm-bytes', '4MB'],
        /--confirm-bytes "4MB" is ambiguous .* write 4M or 4MiB/,
      ],
      [
        ['--cache-store', 'ws://127.0.0.1:1/', '--data-dir', dataDir, '--undo-block-size', '2K'],
        /--undo-block-size "2K" is too small: it must be at least 4K \(4096 bytes\)/,
      ],
    ] as const) {
      const r = await runCli(['--insecure', ...args]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(new RegExp(`SR_BAD_OPTION: ${names.source}`));
    }
  });

  it('killed with -9 mid-stream, restarts from its persisted position and ends byte-identical', async () => {
    const dir = caseDir();
    const dataDir = path.join(dir, 'processor');
    const cs = await CacheStoreFixture.start(path.join(dir, 'cache-store'));
    let p: CliProcess | undefined;
    try {
      const w = new Workload(DISKS, 4242);
      w.fill(1, 0, DISKS[1]!.size, 0x11);
      w.random(3000, 64 * 1024);
      // The last records are stored only after the kill, so it lands mid-stream.
      const tail = w.lastLsn - 200;
      const agent = await cs.agent(VM, 'gen-a', DISKS);
      p = await startCli(cliArgs(cs.url, dataDir));
      const feeding = feed(agent, w, 1, tail, 20);
      await cs.tap.confirmedAtLeast(VM, Math.floor(w.lastLsn / 4), undefined, 60_000);
      p.child.kill('SIGKILL');
      expect((await p.exited).signal).toBe('SIGKILL');
      await (
        await cs.tap.session(0)
      ).closed;
      const confirmed = cs.tap.confirmed(VM);
      const persisted = await readState(dataDir, VM);
      // Every confirmation must survive the crash (DESIGN.md invariant 2), and the kill landed mid-stream.
      expect(persisted.appliedLsn).toBeGreaterThanOrEqual(confirmed);
      expect(persisted.appliedLsn).toBeLessThan(w.lastLsn);
      await feeding;
      await feed(agent, w, tail + 1, w.lastLsn, 20);

      p = await startCli(cliArgs(cs.url, dataDir));
      const s1 = await cs.tap.session(1);
      expect(await s1.subscribeOf(VM)).toMatchObject({ generation: 'gen-a', from: persisted.appliedLsn + 1 });
      await cs.tap.confirmedAtLeast(VM, w.lastLsn, 'gen-a', 60_000);
      expect(await vmStatus(p.listen, VM)).toMatchObject({
        appliedLsn: w.lastLsn,
        durableLsn: w.lastLsn,
        generation: 'gen-a',
      });

      p.child.kill('SIGTERM');
      expect(await p.exited).toEqual({ code: 0, signal: null });
      expect((await readState(dataDir, VM)).appliedLsn).toBe(w.lastLsn);
      for (const [i, d] of DISKS.entries()) {
        expect(firstDiff(await fsp.readFile(replicaFile(dataDir, VM, d.id)), w.images[i]!)).toBe(-1);
      }
    } finally {
      p?.child.kill('SIGKILL');
      await cs.stop();
    }
  });

  it('stops cleanly on SIGTERM mid-stream: what it applied is persisted and confirmed', async () => {
    const dir = caseDir();
    const dataDir = path.join(dir, 'processor');
    const cs = await CacheStoreFixture.start(path.join(dir, 'cache-store'));
    let p: CliProcess | undefined;
    try {
      const w = new Workload(DISKS, 99);
      w.random(3000, 32 * 1024);
      // The last records are stored only after the stop, so it lands mid-stream.
      const tail = w.lastLsn - 200;
      const agent = await cs.agent(VM, 'gen-b', DISKS);
      p = await startCli(cliArgs(cs.url, dataDir));
      const feeding = feed(agent, w, 1, tail, 10);
      await cs.tap.confirmedAtLeast(VM, 100, undefined, 60_000);
      p.child.kill('SIGTERM');
      expect(await p.exited).toEqual({ code: 0, signal: null });
      await (
        await cs.tap.session(0)
      ).closed;
      await feeding;
      const state = await readState(dataDir, VM);
      expect(state.appliedLsn).toBeLessThan(w.lastLsn);
      // The last round before exit confirmed everything it had applied.
      expect(cs.tap.confirmed(VM)).toBe(state.appliedLsn);
    } finally {
      p?.child.kill('SIGKILL');
      await cs.stop();
    }
  });
});
