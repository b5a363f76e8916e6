import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  JOURNAL_CLI,
  ReplicationEnv,
  ThrottleProxy,
  makeImage,
  requireTools,
  run,
  runFioOk,
  startAgent,
  waitUntil,
} from '@site-recovery/test';

const MiB = 1 << 20;
const SEGMENT = 4 * MiB;
const CAP = 8 * SEGMENT;
/** What fio keeps in flight in the fill below: 8 requests of 1 MiB. */
const IN_FLIGHT_BYTES = 8 * MiB;

// The journal's cap against a checkpoint interval far longer than the test: shipped segments are
// released only below a checkpoint, so without the early checkpoint at half the cap the VM's writes
// would wait at 32 MiB until the interval came round, ten minutes from now.
describe('journal cap with a long checkpoint interval', () => {
  let env: ReplicationEnv;
  beforeAll(async () => {
    requireTools(['fio', 'qemu-io']);
    env = await ReplicationEnv.start('cap');
  });
  afterAll(async () => {
    await env?.close();
  });

  it('checkpoints early as the journal fills, so writes many times the cap go through and replicate', async () => {
    const args = [
      '--journal-segment-bytes',
      String(SEGMENT),
      '--journal-max-bytes',
      String(CAP),
      '--checkpoint-interval',
      '600000',
    ];
    const vm = await env.protect('cap01', [{ id: 'os', size: 256 * MiB }], { args });
    let peak = 0;
    const sampler = setInterval(() => {
      void env.agentStatus(vm).then(
        (s) => (peak = Math.max(peak, s.journal.bytes)),
        () => undefined,
      );
    }, 50);
    // 192 MiB: six times the cap.
    await runFioOk(
      [
        '--name=fill',
        '--ioengine=nbd',
        `--uri=${vm.agent.uri('os')}`,
        '--rw=write',
        '--bs=1m',
        '--iodepth=8',
        '--size=192m',
        '--refill_buffers',
      ],
      { timeoutMs: 60_000 },
    );
    clearInterval(sampler);
    const s = await env.agentStatus(vm);
    expect(s.checkpointLsn).toBeGreaterThan(0); // only the early checkpoints can have moved it
    expect(peak).toBeLessThanOrEqual(CAP + 32 * MiB); // the cap, plus at most one write past it
    await env.drained(vm, 120_000);
    expect(await env.compare(vm)).toEqual([]);
  });

  it('lets go of the oldest segments past half the cap when it has never replicated, instead of stalling the VM', async () => {
    const image = path.join(env.dir, 'solo-os.img');
    await makeImage(image, 128 * MiB);
    const dataDir = path.join(env.dir, 'solo-agent');
    const args = [
      '--status',
      '127.0.0.1:0',
      '--journal-segment-bytes',
      String(SEGMENT),
      '--journal-max-bytes',
      String(CAP),
      '--checkpoint-interval',
      '600000',
    ];
    const agent = await startAgent({ vm: 'solo01', disks: [{ id: 'os', path: image }], dataDir, args });
    let s: { journal: { firstLsn: number; bytes: number; stalled: boolean } };
    try {
      // 96 MiB, three times the cap, read back and checked: before, the writes past 32 MiB waited for good.
      const uri = agent.uri('os');
      await runFioOk(
        [
          '--name=fill',
          '--ioengine=nbd',
          `--uri=${uri}`,
          '--rw=write',
          '--bs=1m',
          `--iodepth=${IN_FLIGHT_BYTES / MiB}`,
          '--size=96m',
          '--verify=crc32c',
        ],
        { timeoutMs: 60_000 },
      );
      s = (await (await fetch(`http://${String(agent.ready['status'])}/status`)).json()) as typeof s;
      expect(s.journal.firstLsn).toBeGreaterThan(1);
      // The cap is where appends start to wait: requests admitted before the journal reached it still
      // land, so it can be passed by what fio keeps in flight (8 × 1 MiB), never by more.
      expect(s.journal.bytes).toBeLessThanOrEqual(CAP + IN_FLIGHT_BYTES);
      expect(s.journal.stalled).toBe(false);
      expect(agent.stderr()).toContain('no longer reaches back to the starting images');
      expect(await agent.stop()).toBe(0);
    } finally {
      await agent.kill();
    }

    // The journal cannot rebuild the starting images any more, and the replay tool says so instead of
    // producing a wrong image; from the images as of the journal's start it still can.
    const copy = path.join(env.dir, 'solo-copy.img');
    await makeImage(copy, 128 * MiB);
    const refused = await run(process.execPath, [JOURNAL_CLI, 'replay', '--data-dir', dataDir, '--disk', `os=${copy}`]);
    expect(refused.code).toBe(2);
    // The stop's last checkpoint may have let go of more segments than the status showed before it.
    const start = /SR_BAD_OPTION: the journal starts at LSN (\d+): .* --from (\d+)/.exec(refused.stderr);
    expect(start, refused.stderr).not.toBeNull();
    const firstLsn = Number(start![1]);
    expect(Number(start![2])).toBe(firstLsn);
    expect(firstLsn).toBeGreaterThanOrEqual(s.journal.firstLsn);
    await fs.copyFile(image, copy);
    const replayed = await run(process.execPath, [
      JOURNAL_CLI,
      'replay',
      '--data-dir',
      dataDir,
      '--disk',
      `os=${copy}`,
      '--from',
      String(firstLsn),
    ]);
    expect(replayed.code, replayed.stderr).toBe(0);
    expect((await fs.readFile(copy)).equals(await fs.readFile(image))).toBe(true);
  });

  it('keeps the backlog of a VM that has replicated when it runs without a cache-store, goes to bitmap mode at the cap, and resyncs once it has one again', async () => {
    const args = ['--journal-segment-bytes', String(SEGMENT), '--journal-max-bytes', String(CAP)];
    const vm = await env.protect('backlog01', [{ id: 'os', size: 128 * MiB }], { args });
    await env.drained(vm);
    expect(await vm.agent.stop()).toBe(0);
    const agent = await startAgent({
      vm: vm.name,
      disks: vm.disks,
      dataDir: vm.dataDir,
      args: ['--status', '127.0.0.1:0', ...args],
    });
    try {
      const statusUrl = `http://${String(agent.ready['status'])}/status`;
      const before = (await (await fetch(statusUrl)).json()) as { journal: { firstLsn: number } };
      // 48 MiB, half again the cap, with nothing to ship it to: before bitmap mode the write waited for good.
      const write = await run('qemu-io', ['-f', 'raw', agent.uri('os'), '-c', 'write -P 0x6b 0 48M'], {
        timeoutMs: 30_000,
      });
      expect(write.code, write.stderr).toBe(0);
      const st = (await (await fetch(statusUrl)).json()) as {
        journal: { firstLsn: number; stalled: boolean };
        stalledWrites: number;
        mode: { state: string; dirtyBytes: number };
      };
      expect(st.mode.state).toBe('bitmap');
      expect(st.mode.dirtyBytes).toBeGreaterThan(0);
      expect(st.stalledWrites).toBe(0);
      expect(st.journal.firstLsn).toBe(before.journal.firstLsn); // nothing of the backlog went
      expect(await agent.stop()).toBe(0);
    } finally {
      await agent.kill();
    }
    // With the cache-store again: the backlog ships, then the regions written in bitmap mode follow it.
    await env.startAgentFor(vm, { args });
    expect((await env.agentStatus(vm)).mode?.state).toBe('bitmap');
    await env.drained(vm, 120_000);
    expect(await env.compare(vm)).toEqual([]);
  });

  it('answers the VM in bitmap mode while the initial copy waits at the cap with the link cut, and stops cleanly', async () => {
    // The cache-store cannot be reached, so nothing is acknowledged and nothing can be released: the
    // initial copy of 64 MiB of data fills the 32 MiB journal and waits; the VM's write does not. No sums
    // can come, so the copy is told not to wait for them (--sums-wait 0s) and copies every block.
    const proxy = new ThrottleProxy('127.0.0.1', 9, { bytesPerSecond: Infinity, delayMs: 0 });
    await proxy.listen();
    proxy.partition();
    try {
      const image = path.join(env.dir, 'stall-os.img');
      await makeImage(image, 128 * MiB, [{ offset: 0, length: 64 * MiB }]);
      const agent = await startAgent({
        vm: 'stall01',
        disks: [{ id: 'os', path: image }],
        dataDir: path.join(env.dir, 'stall-agent'),
        tokenFile: await env.credentials.agentTokenFile('stall01'),
        args: [
          '--cache-store',
          `ws://127.0.0.1:${proxy.port}`,
          '--status',
          '127.0.0.1:0',
          '--journal-segment-bytes',
          String(SEGMENT),
          '--journal-max-bytes',
          String(CAP),
          '--sums-wait',
          '0s',
        ],
      });
      const statusUrl = `http://${String(agent.ready['status'])}/status`;
      interface Doc {
        journal: { bytes: number; maxBytes: number };
        replication: { initialCopy: { state: string } };
        mode: { state: string };
        stalledWrites: number;
      }
      const status = async (): Promise<Doc> => (await (await fetch(statusUrl)).json()) as Doc;
      await waitUntil(
        'the initial copy to fill the journal',
        async () => ((await status()).journal.bytes >= CAP ? true : undefined),
        30_000,
        50,
      );
      const write = await run('qemu-io', ['-f', 'raw', agent.uri('os'), '-c', 'write -P 0x5a 100M 1M'], {
        timeoutMs: 30_000,
      });
      expect(write.code, write.stderr).toBe(0);
      expect(write.stdout + write.stderr).not.toMatch(/error|failed/i);
      const s = await status();
      expect(s.mode.state).toBe('bitmap');
      expect(s.stalledWrites).toBe(0);
      expect(s.replication.initialCopy.state).toBe('copying');
      const stopped = await Promise.race([
        agent.stop(),
        new Promise((r) => setTimeout(() => r('still running after 30 s'), 30_000)),
      ]);
      if (stopped !== 0) await agent.kill();
      expect(stopped).toBe(0);
      expect(agent.stderr()).toContain('agent stopped');
      expect(agent.stderr()).not.toContain('initial copy failed');
    } finally {
      await proxy.close();
    }
  });
});
