import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  JOURNAL_CLI,
  makeImage,
  requireTools,
  run,
  runOk,
  startAgent,
  tempDir,
  type AgentProcess,
} from '@site-recovery/test';

const KiB = 1024;
const MiB = 1 << 20;
const SIZE = 64 * MiB;
const BLOCK = 64 * KiB;

interface JournalRecord {
  lsn: number;
  kind: string;
  disk: string;
  offset: number;
  length: number;
}

/** Python run by nbdsh: waits all in-flight commands, raising if any of them failed. */
const PY_WAIT_ALL = `
def wait_all(h, cookies):
    while h.aio_in_flight() > 0:
        h.poll(-1)
    for c in cookies:
        h.aio_command_completed(c)
`;

/** Reads each block and reports its byte value if the block is one whole pattern, else -1 (torn). */
const PY_WINNERS = `
def winners(h, offsets):
    out = []
    for off in offsets:
        d = h.pread(${BLOCK}, off)
        out.append(d[0] if d == d[:1] * ${BLOCK} else -1)
    return out
`;

describe('overlapping concurrent writes land whole, in LSN order, on the image and in the journal', () => {
  let root: string;
  let cleanup: () => Promise<void>;
  const agents: AgentProcess[] = [];

  beforeAll(async () => {
    requireTools();
    ({ dir: root, cleanup } = await tempDir('order'));
  });

  afterAll(async () => {
    for (const a of agents) if (a.child.exitCode === null && a.child.signalCode === null) await a.kill();
    await cleanup?.();
  });

  /** A zero image served by a fresh agent with its own data dir. */
  async function scenario(name: string): Promise<{ agent: AgentProcess; image: string; dataDir: string; dir: string }> {
    const dir = path.join(root, name);
    await fsp.mkdir(dir);
    const image = path.join(dir, 'disk.img');
    await makeImage(image, SIZE);
    const dataDir = path.join(dir, 'agent');
    const agent = await startAgent({ vm: name, disks: [{ id: 'disk', path: image }], dataDir });
    agents.push(agent);
    return { agent, image, dataDir, dir };
  }

  async function dump(dataDir: string): Promise<JournalRecord[]> {
    const out = (await runOk('node', [JOURNAL_CLI, 'dump', '--data-dir', dataDir])).stdout.trim();
    return out.split('\n').map((line) => {
      const [lsn, kind, disk, offset, length] = line.split(' ');
      return { lsn: Number(lsn), kind: kind!, disk: disk!, offset: Number(offset), length: Number(length) };
    });
  }

  /**
   * The image must be the journal replayed in LSN order: then every range holds what its
   * highest-LSN covering record wrote. Returns the first range as it was one LSN earlier, which
   * shows that record, and not an earlier one, decided the range.
   */
  async function expectImageFollowsLsnOrder(
    s: { image: string; dataDir: string; dir: string },
    ranges: readonly { offset: number; length: number; writes: number }[],
  ): Promise<Buffer> {
    const records = await dump(s.dataDir);
    const image = await fsp.readFile(s.image);
    const lasts = ranges.map((r) => {
      const covering = records.filter((x) => x.offset < r.offset + r.length && r.offset < x.offset + x.length);
      expect(covering.length, `records covering ${r.offset}+${r.length}`).toBe(r.writes);
      return Math.max(...covering.map((x) => x.lsn));
    });
    const replay = async (to?: number): Promise<Buffer> => {
      const target = path.join(s.dir, `replay-${to ?? 'all'}.img`);
      await makeImage(target, SIZE);
      await runOk('node', [
        JOURNAL_CLI,
        'replay',
        '--data-dir',
        s.dataDir,
        '--disk',
        `disk=${target}`,
        ...(to === undefined ? [] : ['--to', String(to)]),
      ]);
      return fsp.readFile(target);
    };
    const full = await replay();
    for (const r of ranges) {
      expect(
        full.subarray(r.offset, r.offset + r.length).equals(image.subarray(r.offset, r.offset + r.length)),
        `range ${r.offset}+${r.length}: image = replay`,
      ).toBe(true);
    }
    expect(full.equals(image), 'the whole image equals the whole journal replayed').toBe(true);
    const first = ranges[0]!;
    const earlier = (await replay(lasts[0]! - 1)).subarray(first.offset, first.offset + first.length);
    expect(
      earlier.equals(image.subarray(first.offset, first.offset + first.length)),
      `LSN ${lasts[0]} decided range ${first.offset}`,
    ).toBe(false);
    return earlier;
  }

  it('16 in-flight 64 KiB writes to one block on one connection: the last one sent wins, whole', async () => {
    const s = await scenario('one-conn');
    const offsets = [0, 1, 2, 3, 4, 5].map((r) => r * MiB);
    const script = `${PY_WAIT_ALL}${PY_WINNERS}
import json
for off in ${JSON.stringify(offsets)}:
    bufs = [nbd.Buffer.from_bytearray(bytearray(bytes([i]) * ${BLOCK})) for i in range(1, 17)]
    wait_all(h, [h.aio_pwrite(b, off) for b in bufs])
print(json.dumps(winners(h, ${JSON.stringify(offsets)})))
`;
    const r = await runOk('nbdsh', ['-u', s.agent.uri('disk'), '-c', script]);
    // One connection delivers requests in the order sent; the agent numbers them in arrival order and
    // applies overlapping ones in that order, so pattern 16 wins every block.
    expect(JSON.parse(r.stdout)).toEqual(offsets.map(() => 16));
    expect(await s.agent.stop()).toBe(0);
    const before = await expectImageFollowsLsnOrder(
      s,
      offsets.map((offset) => ({ offset, length: BLOCK, writes: 16 })),
    );
    expect(before.equals(Buffer.alloc(BLOCK, 15)), 'one LSN earlier the block held the 15th write').toBe(true);
  });

  it('racing writes to the same blocks from two nbdsh processes: each block is one whole pattern, the highest LSN', async () => {
    const s = await scenario('two-conns');
    const offsets = [0, 1, 2, 3].map((r) => r * MiB);
    const rounds = 48;
    // Both processes start at the same wall-clock moment, so their writes interleave on arrival.
    const startAt = Date.now() / 1000 + 1.5;
    const writer = (first: number): string => `${PY_WAIT_ALL}
import json, time
time.sleep(max(0, ${startAt} - time.time()))
t0 = time.time()
offs = ${JSON.stringify(offsets)}
for n in range(${rounds}):
    off = offs[n % len(offs)]
    bufs = [nbd.Buffer.from_bytearray(bytearray(bytes([i]) * ${BLOCK})) for i in range(${first}, ${first + 8})]
    wait_all(h, [h.aio_pwrite(b, off) for b in bufs])
print(json.dumps([t0, time.time()]))
`;
    const [a, b] = await Promise.all([
      run('nbdsh', ['-u', s.agent.uri('disk'), '-c', writer(1)]),
      run('nbdsh', ['-u', s.agent.uri('disk'), '-c', writer(9)]),
    ]);
    expect([a.code, b.code], a.stderr + b.stderr).toEqual([0, 0]);
    const [[a0, a1], [b0, b1]] = [JSON.parse(a.stdout) as number[], JSON.parse(b.stdout) as number[]];
    expect(Math.max(a0!, b0!), 'the two writers ran at the same time').toBeLessThan(Math.min(a1!, b1!));
    const r = await runOk('nbdsh', [
      '-u',
      s.agent.uri('disk'),
      '-c',
      `${PY_WINNERS}\nimport json\nprint(json.dumps(winners(h, ${JSON.stringify(offsets)})))`,
    ]);
    const winners = JSON.parse(r.stdout) as number[];
    for (const w of winners)
      expect(w, `winners ${JSON.stringify(winners)} (-1 = torn block)`).toBeGreaterThanOrEqual(1);
    for (const w of winners) expect(w).toBeLessThanOrEqual(16);
    expect(await s.agent.stop()).toBe(0);
    // Each block got (rounds / blocks) rounds of 8 writes from each process.
    const before = await expectImageFollowsLsnOrder(
      s,
      offsets.map((offset) => ({ offset, length: BLOCK, writes: 2 * 8 * (rounds / offsets.length) })),
    );
    expect(before.equals(Buffer.alloc(BLOCK, before[0])), 'one LSN earlier the block held another whole pattern').toBe(
      true,
    );
  });

  it('qemu-io aio_write sequences with partial overlaps read back as the last write of each range', async () => {
    const s = await scenario('qemu-aio');
    const same = Array.from({ length: 8 }, (_, i) => ['-c', `aio_write -P 0x${(0x10 + i).toString(16)} 1M 64k`]).flat();
    const r = await run('qemu-io', [
      '-f',
      'raw',
      s.agent.uri('disk'),
      '-c',
      'aio_write -P 0x01 0 64k',
      '-c',
      'aio_write -P 0x02 32k 64k',
      '-c',
      'aio_write -P 0x03 16k 16k',
      ...same,
      '-c',
      'aio_write -P 0x21 2M 128k',
      '-c',
      'aio_write -z 2M 32k',
      '-c',
      'aio_write -P 0x22 2M 16k',
      '-c',
      'aio_flush',
      '-c',
      'read -P 0x01 0 16k',
      '-c',
      'read -P 0x03 16k 16k',
      '-c',
      'read -P 0x02 32k 64k',
      '-c',
      'read -P 0 96k 32k',
      '-c',
      'read -P 0x17 1M 64k',
      '-c',
      'read -P 0x22 2M 16k',
      '-c',
      'read -P 0 2064k 16k',
      '-c',
      'read -P 0x21 2080k 96k',
    ]);
    expect(r.stdout + r.stderr).not.toMatch(/Pattern verification failed|failed/);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(await s.agent.stop()).toBe(0);
    const ranges = [
      { offset: 0, length: 16 * KiB, writes: 1 },
      { offset: 16 * KiB, length: 16 * KiB, writes: 2 },
      { offset: 32 * KiB, length: 64 * KiB, writes: 2 },
      { offset: MiB, length: 64 * KiB, writes: 8 },
      { offset: 2 * MiB, length: 16 * KiB, writes: 3 },
      { offset: 2 * MiB + 16 * KiB, length: 16 * KiB, writes: 2 },
      { offset: 2 * MiB + 32 * KiB, length: 96 * KiB, writes: 1 },
    ];
    await expectImageFollowsLsnOrder(s, ranges);
  });
});
