import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReplicationEnv, authFetch, requireTools, runFioOk, runOk, waitUntil } from '@site-recovery/test';

const MiB = 1 << 20;

interface Problem {
  code: string;
  message: string;
  vm?: string;
}

// The cache-store's disk fills while the processor is away (nothing it holds can be let go). It takes
// nothing it cannot store: the agent is told SR_NO_SPACE and goes on journaling, so the VM's writes go
// on. When the processor returns, its confirmations free segments (recorded with the space the
// cache-store held back for it), the agent's stream resumes by itself and the replica converges.
describe('the cache-store’s disk full', () => {
  const mountPoint = path.join(os.tmpdir(), `sr-cs-full-${process.pid}`);
  let mounted = false;
  let env: ReplicationEnv;
  beforeAll(async () => {
    requireTools(['fio', 'qemu-io']);
    await fs.mkdir(mountPoint, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=12m', 'tmpfs', mountPoint]);
    mounted = true;
    env = await ReplicationEnv.start('cs-full', {
      cacheStore: { dataDir: path.join(mountPoint, 'cache-store'), args: ['--segment-bytes', String(MiB)] },
    });
  });
  afterAll(async () => {
    await env?.close();
    if (mounted) execFileSync('umount', ['-l', mountPoint]);
    await fs.rm(mountPoint, { recursive: true, force: true });
  });

  async function healthProblems(): Promise<Problem[]> {
    const res = await authFetch(`http://${env.cacheStore.listen}/health/details`, {
      tokenFile: env.cacheStore.tokenFile!,
    });
    const body = (await res.json()) as { ok: boolean; problems?: Problem[] };
    return res.status === 200 ? [] : (body.problems ?? []);
  }

  it('the agent keeps taking NBD writes while it is full, and the replica converges once space returns', async () => {
    const vm = await env.protect('full01', [{ id: 'os', size: 64 * MiB }]);
    await env.drained(vm);
    await env.processor.stop();

    // 32 MiB of incompressible data into a cache-store with about 11 MiB free.
    await runFioOk([
      '--name=fill',
      '--ioengine=nbd',
      `--uri=${vm.agent.uri('os')}`,
      '--rw=write',
      '--bs=1m',
      '--iodepth=4',
      '--size=32m',
      '--refill_buffers',
    ]);
    const problems = await waitUntil(
      'the cache-store to report its disk full',
      async () => {
        const p = await healthProblems();
        return p.some((x) => x.code === 'SR_NO_SPACE' && x.vm === 'full01') ? p : undefined;
      },
      60_000,
      200,
    );
    expect(problems.find((p) => p.vm === 'full01')!.message).toMatch(/no space|ENOSPC/i);
    // The agent learns it on its next send or dial, which may come after the cache-store's health says so.
    const agent = await waitUntil(
      "the agent to see the cache-store's SR_NO_SPACE",
      async () => {
        const a = await env.agentStatus(vm);
        return a.replication?.stream.lastError?.includes('SR_NO_SPACE') === true ? a : undefined;
      },
      60_000,
      200,
    );
    const stored = (await env.cacheStoreVm('full01'))!;
    expect(stored.durableLsn).toBeLessThan(agent.lsn);

    // Still full: the VM's writes are taken all the same, into the journal.
    await runOk('qemu-io', ['-f', 'raw', vm.agent.uri('os'), '-c', 'write -P 0x5c 40M 4M', '-c', 'flush']);
    expect((await env.agentStatus(vm)).lsn).toBeGreaterThan(agent.lsn);
    expect((await healthProblems()).some((p) => p.code === 'SR_NO_SPACE')).toBe(true);

    // The processor returns: what it applies is let go, the stream resumes by itself.
    await env.startProcessor();
    await env.drained(vm, 180_000);
    expect(await env.compare(vm)).toEqual([]);
    await waitUntil(
      'the cache-store to be healthy again',
      async () => (await healthProblems()).length === 0 || undefined,
      30_000,
      200,
    );
  });
});
