import fsp from 'node:fs/promises';
import path from 'node:path';
import type { DiskInfo } from '@site-recovery/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeCacheStore, Workload, chunks, type FakeSession } from '../fake-cache-store.js';
import {
  MiB,
  firstDiff,
  readState,
  replicaFile,
  runCli,
  startCli,
  tempDir,
  vmStatus,
  type CliProcess,
} from '../helpers.js';

const VM = 'db01';
const DISKS: DiskInfo[] = [
  { id: 'os', size: 64 * MiB },
  { id: 'data', size: 16 * MiB },
];

let root: { dir: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  root = await tempDir('processor-cli');
});
afterAll(async () => {
  await root.cleanup();
});

/**
 * Makes the fake cache-store serve `w` to every connection the way the real one would: list the VM,
 * answer the subscription from where the processor asks, then send batches paced a little so a
 * test can act mid-stream.
 */
function serve(
  fake: FakeCacheStore,
  generation: string,
  w: Workload,
  o: { batchRecords: number; pauseMs: number },
): void {
  fake.onSession = (s: FakeSession) => {
    void (async () => {
      try {
        await s.waitFor((m) => m.t === 'hello');
        s.vms([{ vm: VM, generation, disks: w.disks, firstLsn: 1, lastLsn: w.lastLsn }]);
        const sub = await s.subscribeOf(VM);
        const from = sub['generation'] === generation ? (sub['from'] as number) : 1;
        s.stream(VM, generation, w.disks, from);
        for (const c of chunks(w.range(from, w.lastLsn), o.batchRecords)) {
          await s.batch(VM, generation, c);
          await new Promise((r) => setTimeout(r, o.pauseMs));
        }
      } catch {
        // the processor went away (killed by the test)
      }
    })();
  };
}

function cliArgs(fake: FakeCacheStore, dataDir: string): string[] {
  return [
    '--listen',
    '127.0.0.1:0',
    '--cache-store',
    fake.url,
    '--data-dir',
    dataDir,
    '--confirm-interval-ms',
    '50',
    '--reconnect-initial-ms',
    '20',
    '--reconnect-max-ms',
    '200',
  ];
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
    ]) {
      expect(r.stdout).toContain(opt);
    }
    expect(r.stdout).toContain('"event":"ready"');
  });

  it('refuses missing or malformed options with SR_BAD_OPTION and exit code 2', async () => {
    const dataDir = path.join(root.dir, 'bad');
    for (const args of [
      ['--data-dir', dataDir],
      ['--cache-store', 'ws://127.0.0.1:1/'],
      ['--cache-store', 'http://127.0.0.1:1/', '--data-dir', dataDir],
      ['--cache-store', 'ws://127.0.0.1:1/', '--data-dir', dataDir, '--listen', 'nowhere'],
      ['--cache-store', 'ws://127.0.0.1:1/', '--data-dir', dataDir, '--confirm-interval-ms', '0'],
    ]) {
      const r = await runCli(args);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('SR_BAD_OPTION');
    }
  });

  it('killed with -9 mid-stream, restarts from its persisted position and ends byte-identical', async () => {
    const dataDir = path.join(root.dir, 'restart');
    const fake = await FakeCacheStore.start();
    let p: CliProcess | undefined;
    try {
      const w = new Workload(DISKS, 4242);
      w.fill(1, 0, DISKS[1]!.size, 0x11);
      w.random(3000, 64 * 1024);
      serve(fake, 'gen-a', w, { batchRecords: 20, pauseMs: 3 });

      p = await startCli(cliArgs(fake, dataDir));
      const s0 = await fake.session(0);
      await s0.appliedAtLeast(VM, Math.floor(w.lastLsn / 4), undefined, 60_000);
      p.child.kill('SIGKILL');
      expect((await p.exited).signal).toBe('SIGKILL');
      const confirmed = Math.max(...fake.applied(VM).map((m) => m['lsn'] as number));
      const persisted = await readState(dataDir, VM);
      // Every confirmation must survive the crash (DESIGN.md invariant 2), and the kill landed mid-stream.
      expect(persisted.appliedLsn).toBeGreaterThanOrEqual(confirmed);
      expect(persisted.appliedLsn).toBeLessThan(w.lastLsn);

      p = await startCli(cliArgs(fake, dataDir));
      const s1 = await fake.session(1);
      expect(await s1.subscribeOf(VM)).toMatchObject({ generation: 'gen-a', from: persisted.appliedLsn + 1 });
      await s1.appliedAtLeast(VM, w.lastLsn, 'gen-a', 60_000);
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
      await fake.close();
    }
  });

  it('stops cleanly on SIGTERM mid-stream: what it applied is persisted and confirmed', async () => {
    const dataDir = path.join(root.dir, 'sigterm');
    const fake = await FakeCacheStore.start();
    let p: CliProcess | undefined;
    try {
      const w = new Workload(DISKS, 99);
      w.random(3000, 32 * 1024);
      serve(fake, 'gen-b', w, { batchRecords: 10, pauseMs: 5 });
      p = await startCli(cliArgs(fake, dataDir));
      const s0 = await fake.session(0);
      await s0.appliedAtLeast(VM, 100, undefined, 60_000);
      p.child.kill('SIGTERM');
      expect(await p.exited).toEqual({ code: 0, signal: null });
      const state = await readState(dataDir, VM);
      const confirmed = Math.max(...fake.applied(VM).map((m) => m['lsn'] as number));
      expect(state.appliedLsn).toBeLessThan(w.lastLsn);
      // The last round before exit confirmed everything it had applied.
      expect(confirmed).toBe(state.appliedLsn);
    } finally {
      p?.child.kill('SIGKILL');
      await fake.close();
    }
  });
});
