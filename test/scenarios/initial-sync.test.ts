import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReplicationEnv, ThrottleProxy, requireTools, runFioOk, waitUntil } from '@site-recovery/test';

// A VM protected with data already on its disk: the agent copies the existing content through the
// same ordered stream while fio writes; writes that race the copy must never be overwritten by it.
describe('initial replication', () => {
  let env: ReplicationEnv;
  let proxy: ThrottleProxy;
  beforeAll(async () => {
    requireTools(['fio']);
    env = await ReplicationEnv.start('initial');
    const [host, port] = env.cacheStore.listen.split(':') as [string, string];
    // A slower link keeps the copy going long enough to watch its progress and race it.
    proxy = new ThrottleProxy(host, Number(port), { bytesPerSecond: 40 << 20, delayMs: 2 });
    await proxy.listen();
  });
  afterAll(async () => {
    await proxy?.close();
    await env?.close();
  });

  it('copies a pre-filled sparse image while fio writes to it; the replica ends identical', async () => {
    const extents = [0, 64, 130, 200, 300, 420].map((mb) => ({ offset: mb << 20, length: 24 << 20 }));
    const vm = await env.protect('filled01', [{ id: 'os', size: 512 << 20, extents }], {
      cacheStoreUrl: `ws://127.0.0.1:${proxy.port}`,
    });
    const seen: number[] = [];
    const watch = waitUntil(
      'the initial copy to finish',
      async () => {
        const p = await env.processorVm('filled01');
        if (p?.initialSync !== undefined) seen.push(p.initialSync.percent);
        return p?.initialSync?.state === 'done' ? p : undefined;
      },
      120_000,
      100,
    );
    // Rate-bound, so the data to drain through the 40 MiB/s link does not grow with the agent's speed.
    await runFioOk([
      '--name=race',
      '--ioengine=nbd',
      `--uri=${vm.agent.uri('os')}`,
      '--rw=randwrite',
      '--bs=64k',
      '--iodepth=8',
      '--size=512m',
      '--runtime=5',
      '--time_based',
      '--rate=16m',
    ]);
    await watch;
    // Progress was visible while the copy ran, and ended at 100.
    expect(seen.some((p) => p > 0 && p < 100)).toBe(true);
    expect(seen.at(-1)).toBe(100);
    await env.drained(vm);
    expect(await env.compare(vm)).toEqual([]);
  });
});
