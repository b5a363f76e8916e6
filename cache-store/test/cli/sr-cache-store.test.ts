import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AckSchema, decodeMessage } from '@site-recovery/shared';
import { afterAll, describe, expect, it } from 'vitest';
import { segmentFileName, vmDir } from '../../src/names.js';
import { Peer, PROCESSOR_HELLO, agentHello, batches, eventually } from '../helpers.js';

/** The built CLI (`npx tsc -b` first). */
const CLI = fileURLToPath(new URL('../../dist/cli/sr-cache-store.js', import.meta.url));
const root = await fs.mkdtemp(path.join(os.tmpdir(), 'sr-cs-cli-'));
const children: ChildProcess[] = [];
afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await fs.rm(root, { recursive: true, force: true });
});

interface Cli {
  readonly child: ChildProcess;
  readonly url: string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr(): string;
}

function run(args: string[]): { child: ChildProcess; out: () => string; err: () => string; exited: Cli['exited'] } {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return { child, out: () => out, err: () => err, exited };
}

/**
 * Starts the CLI `--insecure`: these tests drive it alone on loopback with raw peers that present no
 * token, and are about storage, limits and crashes (auth-options.test.ts runs it with credentials).
 */
async function startCli(dataDir: string, extra: string[] = []): Promise<Cli> {
  const r = run([
    '--insecure',
    '--listen',
    '127.0.0.1:0',
    '--data-dir',
    dataDir,
    '--segment-bytes',
    '1M', // sizes take binary suffixes
    ...extra,
  ]);
  const deadline = Date.now() + 30_000;
  for (;;) {
    const line = r
      .out()
      .split('\n')
      .find((l) => l.includes('"ready"'));
    if (line !== undefined) {
      const ready = JSON.parse(line) as { event: string; listen: string };
      expect(ready.listen).toMatch(/^127\.0\.0\.1:\d+$/);
      return { child: r.child, url: `ws://${ready.listen}/`, exited: r.exited, stderr: r.err };
    }
    if (r.child.exitCode !== null || Date.now() > deadline) throw new Error(`no ready line; stderr: ${r.err()}`);
    await new Promise((res) => setTimeout(res, 20));
  }
}

describe('sr-cache-store CLI', () => {
  it('explains every option in --help and refuses bad options with SR_BAD_OPTION', async () => {
    const help = run(['--help']);
    expect((await help.exited).code).toBe(0);
    for (const flag of [
      '--listen',
      '--data-dir',
      '--segment-bytes',
      '--max-frame-bytes',
      '--max-buffered-bytes',
      '--max-unsynced-bytes',
      '--hello-timeout-ms',
      '--max-connections',
      '--max-vms',
    ]) {
      expect(help.out()).toContain(flag);
    }
    // --insecure, so each is refused for the option it names and not for the missing credentials.
    const bad = run(['--insecure', '--listen', 'nowhere', '--data-dir', root]);
    expect((await bad.exited).code).toBe(2);
    expect(bad.err()).toMatch(/SR_BAD_OPTION.*--listen/);
    const zero = run(['--insecure', '--listen', '127.0.0.1:0', '--data-dir', root, '--max-vms', '0']);
    expect((await zero.exited).code).toBe(2);
    expect(zero.err()).toMatch(/SR_BAD_OPTION.*--max-vms/);
    expect(help.out()).toContain('(default: 64M)');
    const ambiguous = run(['--insecure', '--listen', '127.0.0.1:0', '--data-dir', root, '--max-frame-bytes', '4MB']);
    expect((await ambiguous.exited).code).toBe(2);
    expect(ambiguous.err()).toMatch(/SR_BAD_OPTION: --max-frame-bytes "4MB" is ambiguous .* write 4M or 4MiB/);
    const small = run(['--insecure', '--listen', '127.0.0.1:0', '--data-dir', root, '--segment-bytes', '32K']);
    expect((await small.exited).code).toBe(2);
    expect(small.err()).toMatch(/SR_BAD_OPTION: --segment-bytes "32K" is too small: it must be at least 64K/);
  });

  it('--max-vms: refuses a VM past the limit with SR_LIMIT and logs it; the VM it holds goes on', async () => {
    const cli = await startCli(path.join(root, 'max-vms'), ['--max-vms', '1']);
    const a = await Peer.open(cli.url);
    a.send(agentHello('vm1', 'g1'));
    await a.expect('welcome');
    const b = await Peer.open(cli.url);
    b.send(agentHello('vm2', 'g1'));
    const refused = await b.expect('error');
    expect(refused).toMatchObject({ code: 'SR_LIMIT' });
    expect(refused.message).toContain('--max-vms');
    expect((await b.closed).code).toBe(1008);
    await eventually(() => cli.stderr().includes('SR_LIMIT'), 5000, 'a log line with SR_LIMIT');
    const logged = cli
      .stderr()
      .split('\n')
      .filter((l) => l.includes('SR_LIMIT'));
    expect(logged.length).toBeGreaterThan(0);
    expect(logged[0]).toContain('vm2');
    for (const batch of await batches('vm1', 'g1', 1, 2)) a.send(batch.frame);
    expect(await a.ackedThrough(8)).toBe(8);
    a.close();
    cli.child.kill('SIGTERM');
    expect((await cli.exited).code).toBe(0);
  });

  it('after kill -9 mid-stream, restarts with every acked batch durable and serves them back byte for byte', async () => {
    const dataDir = path.join(root, 'crash');
    const first = await startCli(dataDir);
    const agent = await Peer.open(first.url);
    agent.send(agentHello('vm1', 'g1'));
    expect((await agent.expect('welcome')).durableLsn).toBe(0);

    const sent = await batches('vm1', 'g1', 1, 1500, 4, 4096); // 1500 x 16 KiB, LSNs 1..6000
    let acked = 0;
    // Kill as soon as a third is acknowledged, while the rest is still on its way in.
    agent.ws.on('message', (data: Buffer) => {
      const ack = decodeMessage(data, AckSchema);
      acked = Math.max(acked, ack.lsn);
      if (acked >= 2000 && first.child.signalCode === null) first.child.kill('SIGKILL');
    });
    for (const b of sent) agent.send(b.frame);
    const exit = await first.exited;
    expect(exit.signal).toBe('SIGKILL');
    const ackedBeforeKill = acked;
    expect(ackedBeforeKill).toBeGreaterThanOrEqual(2000);
    expect(ackedBeforeKill).toBeLessThan(6000); // killed mid-stream, not after

    const second = await startCli(dataDir);
    const again = await Peer.open(second.url);
    again.send(agentHello('vm1', 'g1'));
    const durable = (await again.expect('welcome')).durableLsn;
    expect(durable).toBeGreaterThanOrEqual(ackedBeforeKill);
    expect(durable % 4).toBe(0); // whole batches only

    const proc = await Peer.open(second.url);
    proc.send(PROCESSOR_HELLO);
    expect((await proc.expect('vms')).vms).toEqual([
      expect.objectContaining({ vm: 'vm1', generation: 'g1', firstLsn: 1, lastLsn: durable }),
    ]);
    proc.send({ t: 'subscribe', vm: 'vm1', generation: 'g1', from: 1 });
    expect(await proc.expect('stream')).toMatchObject({ generation: 'g1', from: 1 });
    for (let i = 0; i < durable / 4; i++) {
      const got = await proc.recvRaw();
      expect(got.equals(sent[i]!.frame), `batch ${i} (LSN ${sent[i]!.first})`).toBe(true);
    }
    // The stream goes on where it stopped, and the processor tails it.
    const more = await batches('vm1', 'g1', durable + 1, 3);
    for (const b of more) again.send(b.frame);
    expect(await again.ackedThrough(durable + 12)).toBe(durable + 12);
    for (const b of more) expect((await proc.recvRaw()).equals(b.frame)).toBe(true);

    agent.close();
    again.close();
    proc.close();
    second.child.kill('SIGTERM');
    expect((await second.exited).code).toBe(0);
  });

  it('sets aside a VM whose older segment is damaged, naming the file, and keeps serving the others', async () => {
    const dataDir = path.join(root, 'damaged');
    const cli = await startCli(dataDir);
    for (const vm of ['vm1', 'vm2']) {
      const agent = await Peer.open(cli.url);
      agent.send(agentHello(vm, 'g1'));
      await agent.expect('welcome');
      for (const b of await batches(vm, 'g1', 1, 100, 4, 4096)) agent.send(b.frame); // 1.6 MiB: two segments
      await agent.ackedThrough(400);
      agent.close();
    }
    cli.child.kill('SIGTERM');
    expect((await cli.exited).code).toBe(0);
    const seg = path.join(vmDir(dataDir, 'vm1'), segmentFileName(1));
    const fh = await fs.open(seg, 'r+');
    const { buffer: two } = await fh.read(Buffer.alloc(2), 0, 2, 5000);
    await fh.write(
      two.map((b) => b ^ 0xff),
      0,
      2,
      5000,
    ); // inverted, so the bytes surely change
    await fh.close();

    const again = await startCli(dataDir);
    const statusUrl = again.url.replace('ws://', 'http://') + 'status';
    const status = (await (await fetch(statusUrl)).json()) as {
      vms: { vm: string; durableLsn: number }[];
      damaged?: { vm: string; generation?: string; error: string }[];
    };
    expect(status.vms.map((v) => [v.vm, v.durableLsn])).toEqual([['vm2', 400]]);
    expect(status.damaged).toMatchObject([{ vm: 'vm1', generation: 'g1' }]);
    expect(status.damaged![0]!.error).toContain(segmentFileName(1));
    expect(again.stderr()).toContain(segmentFileName(1));

    // The damaged generation is refused, saying what to do; the other VM resumes where it was.
    const stale = await Peer.open(again.url);
    stale.send(agentHello('vm1', 'g1'));
    const refused = await stale.expect('error');
    expect(refused.code).toBe('SR_JOURNAL_CORRUPT');
    expect(refused.message).toContain('--resync');
    const other = await Peer.open(again.url);
    other.send(agentHello('vm2', 'g1'));
    expect((await other.expect('welcome')).durableLsn).toBe(400);
    other.close();

    // A new generation replaces the damaged data.
    const resync = await Peer.open(again.url);
    resync.send(agentHello('vm1', 'g2'));
    expect((await resync.expect('welcome')).durableLsn).toBe(0);
    for (const b of await batches('vm1', 'g2', 1, 10, 4, 4096)) resync.send(b.frame);
    await resync.ackedThrough(40);
    resync.close();
    const after = (await (await fetch(statusUrl)).json()) as {
      vms: { vm: string; generation: string }[];
      damaged?: unknown;
    };
    expect(after.damaged).toBeUndefined();
    expect(after.vms.find((v) => v.vm === 'vm1')).toMatchObject({ generation: 'g2' });
    again.child.kill('SIGTERM');
    expect((await again.exited).code).toBe(0);
  });
});
