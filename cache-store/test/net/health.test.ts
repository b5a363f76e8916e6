import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { batches, type Peer } from '../helpers.js';
import { useServers, type RunningServer } from './server-harness.js';
import { segmentFileName, vmDir } from '../../src/names.js';

/**
 * Real storage failures: the data dir is a small tmpfs (the tests run as root, like CI), so writes
 * fail inside the kernel (ENOSPC, EROFS) rather than in a mock.
 */
const mounts: string[] = [];
afterEach(async () => {
  for (const m of mounts.splice(0)) {
    execFileSync('umount', ['-l', m]);
    await fs.rm(m, { recursive: true, force: true });
  }
});

// After the hook above, so servers stop (hooks run in reverse) before their file systems go.
const { server, agent } = useServers();

/** A tmpfs of `size`: its mount point, and a data dir inside it (the server fixture removes that). */
async function tmpfs(size: string): Promise<{ mount: string; dataDir: string }> {
  const mount = await fs.mkdtemp(path.join(os.tmpdir(), 'sr-cs-health-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', mount]);
  mounts.push(mount);
  return { mount, dataDir: path.join(mount, 'data') };
}

interface Problem {
  code: string;
  message: string;
  vm?: string;
}

async function health(s: RunningServer): Promise<{ status: number; problems: Problem[] }> {
  const r = await s.http('/health');
  const body = r.body as { ok: boolean; problems?: Problem[] };
  expect(body.ok).toBe(r.status === 200);
  if (r.status !== 200) expect(r.status).toBe(503);
  return { status: r.status, problems: body.problems ?? [] };
}

describe('GET /health and /status', () => {
  it('answers 200 {ok:true} when healthy, and JSON errors for other paths and methods', async () => {
    const s = await server();
    await agent(s);
    expect(await s.http('/health')).toEqual({ status: 200, body: { ok: true } });
    expect(await s.http('/status')).toMatchObject({ status: 200, body: { vms: [{ vm: 'vm1' }], trackedVms: 1 } });
    expect(await s.http('/nowhere')).toMatchObject({ status: 404, body: { code: 'SR_NOT_FOUND' } });
    expect(await s.http('/status', 'POST')).toMatchObject({ status: 405, body: { code: 'SR_METHOD_NOT_ALLOWED' } });
    expect(await s.http('/health', 'HEAD')).toEqual({ status: 200, body: undefined });
    // The WebSocket endpoint on the same server still works.
    await agent(s, 'vm2');
  });

  it('reports a data dir that takes no writes (read-only) as SR_IO, and is healthy again once it does', async () => {
    const { mount, dataDir } = await tmpfs('8m');
    const s = await server({ dataDir });
    expect((await health(s)).status).toBe(200);
    execFileSync('mount', ['-o', 'remount,ro', mount]);
    const h = await health(s);
    expect(h.status).toBe(503);
    expect(h.problems).toEqual([
      { code: 'SR_IO', message: expect.stringMatching(/data directory.*read-only/i) as unknown },
    ]);
    execFileSync('mount', ['-o', 'remount,rw', mount]);
    expect(await health(s)).toEqual({ status: 200, problems: [] });
  });

  it('reports a full disk, then the VM log that refused appends until its agent resumes it', async () => {
    const { mount, dataDir } = await tmpfs('3m');
    const s = await server({ dataDir, store: { segmentBytes: 1024 * 1024 } });
    const a = await agent(s);
    for (const b of await batches('vm1', 'g1', 1, 400, 4, 4096)) a.peer.send(b.frame); // 6.4 MiB into 3 MiB
    await untilError(a.peer, 'SR_NO_SPACE');
    // Whatever the failed write left free goes too, so the store's own check meets a full disk.
    await fill(path.join(mount, 'filler'));
    const full = await health(s);
    expect(full.status).toBe(503);
    expect(full.problems).toEqual(
      expect.arrayContaining([
        { code: 'SR_NO_SPACE', message: expect.stringMatching(/data directory/) as unknown },
        { code: 'SR_NO_SPACE', message: expect.stringMatching(/vm1/) as unknown, vm: 'vm1' },
      ]),
    );
    expect(full.problems.length).toBe(2);

    // Room again: the store takes writes, but vm1's log still refuses appends until it is resumed.
    await fs.rm(path.join(mount, 'filler'));
    execFileSync('mount', ['-o', 'remount,size=16m', mount]);
    const vmOnly = await health(s);
    expect(vmOnly.status).toBe(503);
    expect(vmOnly.problems).toEqual([expect.objectContaining({ code: 'SR_NO_SPACE', vm: 'vm1' })]);
    await agent(s); // the welcome resumes the log
    expect(await health(s)).toEqual({ status: 200, problems: [] });
  });

  it('reports a VM set aside as damaged until a new generation replaces it', async () => {
    const first = await server({ store: { segmentBytes: 64 * 1024 } });
    const a = await agent(first);
    for (const b of await batches('vm1', 'g1', 1, 20)) a.peer.send(b.frame); // 20 x 16 KiB: several segments
    await a.peer.ackedThrough(80);
    await first.stop();
    const fh = await fs.open(path.join(vmDir(first.dataDir, 'vm1'), segmentFileName(1)), 'r+');
    await fh.write(Buffer.from('damage'), 0, 6, 5000);
    await fh.close();

    const s = await server({ dataDir: first.dataDir, store: { segmentBytes: 64 * 1024 } });
    const h = await health(s);
    expect(h.status).toBe(503);
    expect(h.problems).toEqual([
      { code: 'SR_JOURNAL_CORRUPT', message: expect.stringContaining('--resync') as unknown, vm: 'vm1' },
    ]);
    await agent(s, 'vm1', 'g2');
    expect(await health(s)).toEqual({ status: 200, problems: [] });
  });
});

/** Reads acks until an error message, which must carry `code`. */
async function untilError(p: Peer, code: string): Promise<void> {
  for (;;) {
    const m = await p.recv();
    if (m.t === 'ack') continue;
    expect(m).toMatchObject({ t: 'error', code });
    return;
  }
}

/** Writes to `file` until the file system is full. */
async function fill(file: string): Promise<void> {
  const fh = await fs.open(file, 'w');
  try {
    for (;;) await fh.write(Buffer.alloc(64 * 1024));
  } catch (err) {
    expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC');
  } finally {
    await fh.close();
  }
}
