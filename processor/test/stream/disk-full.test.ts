import { execFileSync } from 'node:child_process';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { DiskInfo } from '@site-recovery/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileReplicaStore } from '../../src/replica/file-replica-store.js';
import { useProcessorCases } from '../processor-cases.js';
import { Workload, chunks } from '../workload.js';
import { MiB, expectImages, getJson, readState, replicaBytes, until, vmStatus } from '../helpers.js';

/**
 * A full disk for real: the processor's data dir is a small tmpfs (the tests run as root, like CI), so
 * replica and undo-log writes fail with ENOSPC inside the kernel rather than in a mock.
 */
const mountPoint = await fsp.mkdtemp(path.join(os.tmpdir(), 'sr-processor-full-'));
let mounted = false;
const cases = useProcessorCases('disk-full');

beforeAll(() => {
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=48m', 'tmpfs', mountPoint]);
  mounted = true;
});

afterAll(async () => {
  if (mounted) execFileSync('umount', ['-l', mountPoint]);
  await fsp.rm(mountPoint, { recursive: true, force: true });
});

const VM = 'full01';
const DISKS: DiskInfo[] = [{ id: 'os', size: 64 * MiB }];

interface Health {
  ok: boolean;
  problems: { code: string; message: string; vm?: string }[];
}

describe('processor with a full disk', () => {
  it('pauses applying and keeps every point while the replica cannot grow, says so, and resumes by itself once there is room', async () => {
    const { cs, processor } = await cases.start({
      store: () => new FileReplicaStore(mountPoint),
      options: { storageRetry: { initialDelayMs: 50, maxDelayMs: 200 } },
    });
    const listen = processor.listen;
    const w = new Workload(DISKS, 77);
    for (let i = 0; i < 4; i++) w.write(0, i * MiB, MiB);
    w.sync(1);
    const agent = await cs.agent(VM, 'g1', DISKS);
    await agent.send(w.records, { done: 1, total: 1 });
    await cs.tap.confirmedAtLeast(VM, w.lastLsn);
    const point = await processor.get(VM)!.cutPoint('crash');
    const atPoint = w.images.map((b) => Buffer.from(b));

    // Leave about 16 MiB free; then overwrite the 4 MiB under the point (saved to its undo log first)
    // and write 16 MiB more: 20 MiB that cannot fit.
    const ballast = path.join(mountPoint, 'ballast');
    await fsp.writeFile(ballast, Buffer.alloc(28 * MiB, 1));
    const from = w.lastLsn + 1;
    for (let i = 0; i < 4; i++) w.write(0, i * MiB, MiB);
    for (let i = 0; i < 16; i++) w.write(0, (16 + i) * MiB, MiB);
    for (const c of chunks(w.range(from, w.lastLsn), 2)) await agent.send(c);
    await agent.ackedThrough(w.lastLsn);

    const paused = await until('the VM to pause for the full disk', async () => {
      const v = await vmStatus(listen, VM);
      return v.state === 'paused' ? v : undefined;
    });
    expect(paused).toMatchObject({ errorCode: 'SR_NO_SPACE', paused: { code: 'SR_NO_SPACE' } });
    const health = await until('health to name the full disk', async () => {
      const res = await fetch(`http://${listen}/health`);
      const h = (await res.json()) as Health;
      return res.status === 503 && h.problems.some((p) => p.code === 'SR_REPLICA_DISK_FULL') ? h : undefined;
    });
    const problem = health.problems.find((p) => p.code === 'SR_REPLICA_DISK_FULL')!;
    expect(problem.vm).toBe(VM);
    expect(problem.message).toMatch(/every recovery point is kept.*free space on the data dir/);
    // Nothing past the durable position is confirmed: the cache-store keeps the records.
    const confirmed = cs.tap.confirmed(VM);
    expect(confirmed).toBeLessThan(w.lastLsn);
    expect((await readState(mountPoint, VM)).appliedLsn).toBe(confirmed);
    expect(cs.status().vms.find((v) => v.vm === VM)).toMatchObject({ appliedLsn: confirmed });
    const listed = await getJson<{ id: string }[]>(listen, `/vms/${VM}/points`);
    expect(listed.map((p) => p.id)).toEqual([point.id]);

    // Room again: the processor resumes on its own and catches up.
    await fsp.rm(ballast);
    await cs.tap.confirmedAtLeast(VM, w.lastLsn);
    expectImages(await replicaBytes(mountPoint, VM, DISKS), w.images);
    const after = await until('the pause to end', async () => {
      const v = await vmStatus(listen, VM);
      return v.state === 'replicating' ? v : undefined;
    });
    expect(after.paused).toBeUndefined();
    expect(after.lastError?.code).toBe('SR_NO_SPACE');
    const healthy = await getJson<Health>(listen, '/health');
    expect(healthy.problems).toEqual([]);

    // The point taken before the disk filled still restores exactly (materialised off the full disk).
    const replica = processor.get(VM)!.current!;
    const plan = replica.points.plan(point.id)!;
    const target = path.join(os.tmpdir(), `sr-full-point-${process.pid}.img`);
    try {
      await replica.points.materialize(plan, [target]);
      expectImages([await fsp.readFile(target)], atPoint);
    } finally {
      await fsp.rm(target, { force: true });
    }
  });
});
