import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  firstDifference,
  makeImage,
  requireTools,
  run,
  runOk,
  startAgent,
  tempDir,
  type AgentProcess,
  type RunResult,
} from '@site-recovery/test';

const GiB = 1 << 30;
const MiB = 1 << 20;
const DATA_SIZE = 64 * MiB;

/** Random extents over a disk: scattered 256 KiB..4 MiB runs plus the first and the last MiB. */
function scattered(size: number, count: number): { offset: number; length: number }[] {
  const out = [
    { offset: 0, length: MiB },
    { offset: size - MiB, length: MiB },
  ];
  for (let i = 0; i < count; i++) {
    const length = (1 + Math.floor(Math.random() * 16)) * 256 * 1024;
    out.push({ offset: Math.floor(Math.random() * ((size - length) / 4096)) * 4096, length });
  }
  return out;
}

/** qemu-io reports a failed `read -P` check as text among its other output; check the text and the exit code. */
function expectQemuIoClean(r: RunResult): void {
  expect(r.stdout + r.stderr).not.toMatch(/Pattern verification failed|failed|error/i);
  expect(r.code, r.stdout + r.stderr).toBe(0);
}

interface FioJob {
  error: number;
  write: { io_bytes: number };
  read: { io_bytes: number };
}

/** Runs in `cwd` because fio leaves a verify state file in its working directory. */
async function fio(cwd: string, args: readonly string[]): Promise<FioJob> {
  const r = await runOk('fio', ['--output-format=json', ...args], { timeoutMs: 120_000, cwd });
  const out = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as { jobs: FioJob[] };
  return out.jobs[0]!;
}

describe('real NBD clients against one agent (1 GiB + 64 MiB disks)', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let agent: AgentProcess;
  let osImage: string;
  let dataImage: string;
  let os: string;
  const file = (name: string): string => path.join(dir, name);

  beforeAll(async () => {
    requireTools();
    ({ dir, cleanup } = await tempDir('clients'));
    osImage = file('os.img');
    dataImage = file('data.img');
    await makeImage(osImage, GiB);
    await makeImage(dataImage, DATA_SIZE);
    agent = await startAgent({
      vm: 'clients',
      disks: [
        { id: 'os', path: osImage },
        { id: 'data', path: dataImage },
      ],
      dataDir: file('agent'),
    });
    os = agent.uri('os');
  });

  afterAll(async () => {
    if (agent !== undefined && agent.child.exitCode === null) await agent.kill();
    await cleanup?.();
  });

  it('nbdinfo shows the size and flags of an export, lists both exports, and --can flush/fua/trim/zero succeed', async () => {
    const plain = await runOk('nbdinfo', [os]);
    expect(plain.stdout).toMatch(/export-size:\s+1073741824\b/);
    const info = JSON.parse((await runOk('nbdinfo', ['--json', os])).stdout) as { exports: Record<string, unknown>[] };
    expect(info.exports[0]).toMatchObject({
      'export-name': 'os',
      'export-size': GiB,
      is_read_only: false,
      can_flush: true,
      can_fua: true,
      can_trim: true,
      can_zero: true,
      can_multi_conn: true,
      block_size_minimum: 512,
      block_size_maximum: 32 * MiB,
    });

    const list = JSON.parse(
      (await runOk('nbdinfo', ['--list', '--json', `nbd://${agent.host}:${agent.port}`])).stdout,
    ) as { exports: Record<string, unknown>[] };
    expect(list.exports.map((e) => [e['export-name'], e['export-size']]).sort()).toEqual([
      ['data', DATA_SIZE],
      ['os', GiB],
    ]);

    for (const what of ['flush', 'fua', 'trim', 'zero']) {
      expect((await run('nbdinfo', ['--can', what, os])).code, `nbdinfo --can ${what}`).toBe(0);
    }
    expect((await run('nbdinfo', ['--is', 'read-only', os])).code, 'the export is writable').toBe(2);
    // The default export (no name in the URI) is the first disk.
    expect((await runOk('nbdinfo', ['--size', `nbd://${agent.host}:${agent.port}`])).stdout.trim()).toBe(String(GiB));
  });

  it('qemu-io writes, zeroes, discards and reads back every pattern, unaligned, 32 MiB and at the last MiB', async () => {
    const r = await run('qemu-io', [
      '-f',
      'raw',
      os,
      '-c',
      'write -P 0xa5 0 4M',
      '-c',
      'read -P 0xa5 0 4M',
      '-c',
      'write -f -P 0x5a 4M 64k',
      '-c',
      'read -P 0x5a 4M 64k',
      '-c',
      'write -P 0x77 8M 3M',
      '-c',
      'write -z 8M 1M',
      '-c',
      'read -P 0 8M 1M',
      '-c',
      'write -z -u 9M 1M',
      '-c',
      'read -P 0 9M 1M',
      '-c',
      'discard 10M 1M',
      '-c',
      'flush',
      '-c',
      'read -P 0 10M 1M',
      '-c',
      'write -P 0x33 1 3',
      '-c',
      'read -P 0x33 1 3',
      '-c',
      'read -P 0xa5 0 1',
      '-c',
      'read -P 0xa5 4 4092',
      '-c',
      'write -P 0x22 40M 32M',
      '-c',
      'read -P 0x22 40M 32M',
      '-c',
      'read -P 0 72M 1M',
      '-c',
      'write -P 0x11 1023M 1M',
      '-c',
      'read -P 0x11 1023M 1M',
      '-c',
      'read -P 0x5a 4M 64k',
    ]);
    expectQemuIoClean(r);
    // A wrong pattern must be caught, or the checks above prove nothing.
    const wrong = await run('qemu-io', ['-f', 'raw', '-r', os, '-c', 'read -P 0x99 0 4k']);
    expect(wrong.stdout + wrong.stderr).toMatch(/Pattern verification failed/);
  });

  it('nbdsh: out-of-range and misaligned requests fail with EINVAL/ENOSPC and the connection keeps working', async () => {
    const script = [
      'import json',
      'h.set_strict_mode(0)',
      'size = h.get_size()',
      'def attempt(f):',
      '    try:',
      '        f()',
      '        return "ok"',
      '    except nbd.Error as e:',
      '        return e.errno',
      'res = {"min": h.get_block_size(nbd.SIZE_MINIMUM)}',
      'tail = h.pread(512, size - 512)',
      'res["read_past_end"] = attempt(lambda: h.pread(512, size))',
      'res["read_after"] = h.pread(512, size - 512) == tail',
      'res["write_past_end"] = attempt(lambda: h.pwrite(b"\\x77" * 1024, size - 512))',
      'res["tail_kept"] = h.pread(512, size - 512) == tail',
      'head = h.pread(4096, 0)',
      'res["misaligned_write"] = attempt(lambda: h.pwrite(b"\\x66" * 100, 1))',
      'res["head_kept"] = h.pread(4096, 0) == head',
      'res["zero_past_end"] = attempt(lambda: h.zero(4096, size))',
      'h.pwrite(b"\\x55" * 4096, 8192, nbd.CMD_FLAG_FUA)',
      'res["works_after"] = h.pread(4096, 8192) == b"\\x55" * 4096',
      'print(json.dumps(res))',
    ].join('\n');
    const r = await runOk('nbdsh', ['-u', os, '-c', script]);
    expect(JSON.parse(r.stdout)).toEqual({
      min: 512,
      read_past_end: 'EINVAL',
      read_after: true,
      write_past_end: 'ENOSPC',
      tail_kept: true,
      misaligned_write: 'EINVAL',
      head_kept: true,
      zero_past_end: 'ENOSPC',
      works_after: true,
    });
  });

  it('qemu-img convert -n into the export and back out is byte exact', async () => {
    const src = file('src.img');
    await makeImage(src, GiB, scattered(GiB, 40));
    await runOk('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', src, os]);
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, os]);
    expect(cmp.code, cmp.stdout + cmp.stderr).toBe(0);
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', os, file('back.img')]);
    expect(await firstDifference(src, file('back.img'))).toBe(-1);
  });

  it('nbdcopy copies a file into the export and the export into a file, also with 32 MiB requests', async () => {
    const src = file('src2.img');
    await makeImage(src, GiB, scattered(GiB, 40));
    await runOk('nbdcopy', ['--flush', src, os]);
    await runOk('nbdcopy', [os, file('copy.img')]);
    expect(await firstDifference(src, file('copy.img'))).toBe(-1);

    await runOk('nbdcopy', ['--flush', '--request-size=33554432', '--requests=16', file('src.img'), os]);
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', file('src.img'), os]);
    expect(cmp.code, cmp.stdout + cmp.stderr).toBe(0);

    // The small disk, too: a copy into it must not leak into the other export.
    const small = file('small.img');
    await makeImage(small, DATA_SIZE, scattered(DATA_SIZE, 8));
    await runOk('nbdcopy', ['--flush', small, agent.uri('data')]);
    await runOk('nbdcopy', [agent.uri('data'), file('small-copy.img')]);
    expect(await firstDifference(small, file('small-copy.img'))).toBe(-1);
    const still = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', file('src.img'), os]);
    expect(still.code, still.stdout + still.stderr).toBe(0);
  });

  it('fio verifies its own random writes (crc32c) and writes 512 MiB in 32 MiB requests', async () => {
    const nbd = ['--ioengine=nbd', `--uri=${os}`];
    const verified = await fio(dir, [
      '--name=verify',
      ...nbd,
      '--rw=randwrite',
      '--bs=64k',
      '--iodepth=32',
      '--size=256m',
      '--verify=crc32c',
      '--do_verify=1',
      '--verify_fatal=1',
    ]);
    expect(verified.error).toBe(0);
    expect(verified.write.io_bytes).toBe(256 * MiB);
    expect(verified.read.io_bytes, 'fio read everything back to verify it').toBe(256 * MiB);

    const big = await fio(dir, [
      '--name=big',
      ...nbd,
      '--rw=write',
      '--bs=32m',
      '--iodepth=4',
      '--size=512m',
      '--offset=256m',
    ]);
    expect(big.error).toBe(0);
    expect(big.write.io_bytes).toBe(512 * MiB);
  });

  it('after a clean stop the image files hold exactly what the clients read back', async () => {
    await runOk('nbdcopy', [os, file('final-os.img')]);
    await runOk('nbdcopy', [agent.uri('data'), file('final-data.img')]);
    expect(await agent.stop()).toBe(0);
    expect(await firstDifference(osImage, file('final-os.img'))).toBe(-1);
    expect(await firstDifference(dataImage, file('final-data.img'))).toBe(-1);
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', osImage, file('final-os.img')]);
    expect(cmp.code, cmp.stdout + cmp.stderr).toBe(0);
  });
});
