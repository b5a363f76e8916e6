import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  JOURNAL_CLI,
  SYSTEM_PATH,
  firstDifference,
  makeImage,
  requireTools,
  run,
  runOk,
  startAgent,
  tempDir,
  waitUntil,
  type AgentProcess,
} from '@site-recovery/test';

const MiB = 1 << 20;
const OS_SIZE = 256 * MiB;
const DATA_SIZE = 64 * MiB;
// Small segments so that replay crosses many segment files.
const AGENT_ARGS = ['--journal-segment-bytes', String(4 * MiB)];

interface Verify {
  firstLsn: number;
  lastLsn: number;
  records: number;
  segments: number;
  disks: { id: string; records: number }[];
}

function randomExtents(size: number, count: number): { offset: number; length: number }[] {
  return Array.from({ length: count }, () => {
    const length = (1 + Math.floor(Math.random() * 32)) * 64 * 1024;
    return { offset: Math.floor(Math.random() * ((size - length) / 512)) * 512, length };
  });
}

/** qemu-io commands mixing zeroes (with and without unmap), discards, flushes and plain writes. */
function qemuIoMix(size: number, count: number): string[] {
  const kinds = ['write -z', 'write -z -u', 'discard', 'write -P 0x%', 'flush'];
  return Array.from({ length: count }, (_, i) => {
    const kind = kinds[i % kinds.length]!;
    if (kind === 'flush') return ['-c', 'flush'];
    const length = (1 + Math.floor(Math.random() * 64)) * 32 * 1024;
    const offset = Math.floor(Math.random() * ((size - length) / 512)) * 512;
    return ['-c', `${kind.replace('%', (1 + (i % 250)).toString(16))} ${offset} ${length}`];
  }).flat();
}

interface Layout {
  readonly dir: string;
  readonly dataDir: string;
  readonly disks: { id: string; path: string; start: string; size: number }[];
}

/** Two disks pre-filled with random extents, and a copy of each taken before any agent touches them. */
async function layout(dir: string): Promise<Layout> {
  await fsp.mkdir(dir, { recursive: true });
  const disks = [
    { id: 'os', path: path.join(dir, 'os.img'), start: path.join(dir, 'os.start'), size: OS_SIZE },
    { id: 'data', path: path.join(dir, 'data.img'), start: path.join(dir, 'data.start'), size: DATA_SIZE },
  ];
  for (const d of disks) {
    await makeImage(d.path, d.size, randomExtents(d.size, 16));
    await fsp.copyFile(d.path, d.start);
  }
  return { dir, dataDir: path.join(dir, 'agent'), disks };
}

/** Replays the whole journal onto fresh copies of the starting images; returns the rebuilt files. */
async function replayOntoStart(l: Layout, tag: string): Promise<string[]> {
  const targets = l.disks.map((d) => path.join(l.dir, `${d.id}.${tag}`));
  for (const [i, d] of l.disks.entries()) await fsp.copyFile(d.start, targets[i]!);
  const args = l.disks.flatMap((d, i) => ['--disk', `${d.id}=${targets[i]}`]);
  const r = await runOk('node', [JOURNAL_CLI, 'replay', '--data-dir', l.dataDir, ...args], { timeoutMs: 120_000 });
  expect((JSON.parse(r.stdout) as { applied: number }).applied).toBeGreaterThan(0);
  return targets;
}

async function verify(dataDir: string): Promise<Verify> {
  return JSON.parse((await runOk('node', [JOURNAL_CLI, 'verify', '--data-dir', dataDir])).stdout) as Verify;
}

/** The concurrent mixed workload: several connections at once with writes, zeroes, trims and flushes. */
function workload(agent: AgentProcess, timeBased: boolean): [string, string[]][] {
  const fio = (name: string, uri: string, args: string[]): [string, string[]] => [
    'fio',
    // --thread: jobs as threads, not forked processes (which start sessions of their own), so
    // killing the client kills all of it and its stderr closes.
    [
      `--name=${name}`,
      '--ioengine=nbd',
      `--uri=${uri}`,
      '--thread',
      '--refill_buffers',
      '--randrepeat=0',
      ...args,
      ...(timeBased ? ['--time_based', '--runtime=30', '--rate=24m'] : []),
    ],
  ];
  return [
    fio('writes', agent.uri('os'), [
      '--rw=randwrite',
      '--bsrange=4k-256k',
      '--iodepth=16',
      '--size=256m',
      '--io_size=64m',
      '--fsync=64',
    ]),
    fio('trims', agent.uri('os'), ['--rw=randtrim', '--bs=64k', '--iodepth=8', '--size=256m', '--io_size=24m']),
    fio('mixed', agent.uri('data'), [
      '--rw=randrw',
      '--rwmixwrite=70',
      '--bsrange=512-64k',
      '--iodepth=8',
      '--numjobs=2',
      '--size=64m',
      '--io_size=16m',
    ]),
    ['qemu-io', ['-f', 'raw', agent.uri('os'), ...qemuIoMix(OS_SIZE, 60)]],
    ['qemu-io', ['-f', 'raw', agent.uri('data'), ...qemuIoMix(DATA_SIZE, 60)]],
  ];
}

interface Client {
  readonly cmd: string;
  readonly done: Promise<{ code: number | null; tail: string }>;
  /** Still running (it has not exited). */
  running(): boolean;
  kill(): void;
}

/**
 * Starts a client keeping only the tail of its stderr: fio's nbd engine floods stderr once its
 * server is gone, and collecting that whole would exhaust memory. It runs in `cwd`, a scratch
 * directory: fio leaves files of its own in its working directory.
 */
function client(cmd: string, args: readonly string[], cwd: string): Client {
  const child = spawn(cmd, args, {
    env: { ...process.env, PATH: SYSTEM_PATH },
    cwd,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let tail = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (tail = (tail + d).slice(-4000)));
  const done = new Promise<{ code: number | null; tail: string }>((resolve) =>
    child.once('close', (code) => resolve({ code, tail })),
  );
  return {
    cmd,
    done,
    running: () => child.exitCode === null && child.signalCode === null,
    kill: () => void child.kill('SIGKILL'),
  };
}

describe('journal replay rebuilds the images', () => {
  let root: string;
  let cleanup: () => Promise<void>;
  const agents: AgentProcess[] = [];
  const clients: Client[] = [];
  const launch = (agent: AgentProcess, timeBased: boolean): Client[] => {
    const started = workload(agent, timeBased).map(([cmd, args]) => client(cmd, args, root));
    clients.push(...started);
    return started;
  };
  const start = async (l: Layout): Promise<AgentProcess> => {
    const a = await startAgent({
      vm: 'replay',
      disks: l.disks,
      dataDir: l.dataDir,
      args: [...AGENT_ARGS, '--status', '127.0.0.1:0'],
    });
    agents.push(a);
    return a;
  };

  beforeAll(async () => {
    requireTools();
    ({ dir: root, cleanup } = await tempDir('replay'));
  });

  afterAll(async () => {
    for (const c of clients) c.kill();
    for (const a of agents) if (a.child.exitCode === null && a.child.signalCode === null) await a.kill();
    await cleanup?.();
  });

  it('after a mixed concurrent workload and a clean stop, replay onto the starting images equals the images', async () => {
    const l = await layout(path.join(root, 'clean'));
    const agent = await start(l);
    const results = await Promise.all(launch(agent, false).map((c) => c.done));
    for (const r of results) expect(r.code, r.tail).toBe(0);
    expect(await agent.stop()).toBe(0);

    const v = await verify(l.dataDir);
    expect(v.records).toBeGreaterThan(0);
    expect(v.firstLsn).toBe(1);
    expect(v.lastLsn).toBe(v.records);
    expect(v.segments, 'the journal rolled over several segments').toBeGreaterThan(2);
    expect(v.disks.map((d) => d.records > 0)).toEqual([true, true]);

    // The workload must really contain all three record kinds, in one gapless LSN sequence.
    const dump = (await runOk('node', [JOURNAL_CLI, 'dump', '--data-dir', l.dataDir])).stdout.trim().split('\n');
    expect(dump.length).toBe(v.records);
    const kinds = new Set(dump.map((line) => line.split(' ')[1]));
    expect([...kinds].sort()).toEqual(['trim', 'write', 'zero']);
    expect(dump.every((line, i) => Number(line.split(' ')[0]) === i + 1)).toBe(true);

    const rebuilt = await replayOntoStart(l, 'replayed');
    for (const [i, d] of l.disks.entries()) {
      expect(await firstDifference(d.start, d.path), `${d.id}: the workload changed the image`).not.toBe(-1);
      expect(await firstDifference(rebuilt[i]!, d.path), `${d.id}: first byte where replay and image differ`).toBe(-1);
    }
  });

  it('after kill -9 mid-workload, a restart repairs the image and replay onto the starting images still equals it', async () => {
    const l = await layout(path.join(root, 'crash'));
    const first = await start(l);
    const running = launch(first, true);
    const fio = running.filter((c) => c.cmd === 'fio');
    // Killed mid-workload: once a few hundred records are journaled, while every (time-based) fio job
    // is still writing.
    const statusUrl = `http://${String(first.ready['status'])}/status`;
    await waitUntil(
      'the workload to journal 500 records while every fio client is still writing',
      async () => {
        if (!fio.every((c) => c.running())) throw new Error('a time-based fio client exited early');
        const s = (await (await fetch(statusUrl)).json()) as { lsn: number };
        return s.lsn >= 500 ? true : undefined;
      },
      60_000,
      50,
    );
    await first.kill();
    // fio's nbd engine spins once its server is gone instead of exiting; the clients go too.
    for (const c of running) c.kill();
    await Promise.all(running.map((c) => c.done));

    // The restart replays the journal tail onto the images, then serves again with LSNs continuing.
    const second = await start(l);
    const more = await run('qemu-io', [
      '-f',
      'raw',
      second.uri('os'),
      '-c',
      'write -P 0xe1 0 1M',
      '-c',
      'write -z 2M 1M',
      '-c',
      'read -P 0xe1 0 1M',
    ]);
    expect(more.code, more.stdout + more.stderr).toBe(0);
    expect(await second.stop()).toBe(0);

    const v = await verify(l.dataDir);
    expect(v.lastLsn).toBe(v.records);
    const dump = (await runOk('node', [JOURNAL_CLI, 'dump', '--data-dir', l.dataDir])).stdout.trim().split('\n');
    expect(dump.length, 'the workload wrote before the crash').toBeGreaterThan(100);
    expect(dump.slice(-2)).toEqual([`${v.lastLsn - 1} write os 0 ${MiB}`, `${v.lastLsn} zero os ${2 * MiB} ${MiB}`]);
    const rebuilt = await replayOntoStart(l, 'replayed');
    for (const [i, d] of l.disks.entries()) {
      expect(await firstDifference(rebuilt[i]!, d.path), `${d.id}: first byte where replay and image differ`).toBe(-1);
    }
  });
});
