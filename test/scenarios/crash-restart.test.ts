import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReplicationEnv, requireTools, run, startCacheStore, startProcessor } from '@site-recovery/test';
import path from 'node:path';

// kill -9 of the cache-store, then of the processor, in the middle of a workload: after the stream
// drains the replicas are identical — no acknowledged record lost, none misapplied.
describe('crash and restart of the services mid-workload', () => {
  let env: ReplicationEnv;
  beforeAll(async () => {
    requireTools(['fio']);
    env = await ReplicationEnv.start('crash');
  });
  afterAll(() => env?.close());

  it('survives kill -9 of the cache-store and of the processor', async () => {
    const vm = await env.protect('crash01', [
      { id: 'os', size: 256 << 20, extents: [{ offset: 0, length: 16 << 20 }] },
    ]);
    const workload = run('fio', [
      '--name=w',
      '--ioengine=nbd',
      `--uri=${vm.agent.uri('os')}`,
      '--rw=randwrite',
      '--bsrange=4k-128k',
      '--iodepth=16',
      '--size=256m',
      '--runtime=14',
      '--time_based',
    ]);
    await new Promise((r) => setTimeout(r, 3000));
    const csListen = env.cacheStore.listen;
    await env.cacheStore.kill();
    await new Promise((r) => setTimeout(r, 1500)); // the agent keeps journaling while the cache-store is down
    env.cacheStore = await startCacheStore(path.join(env.dir, 'cache-store'), csListen);
    await new Promise((r) => setTimeout(r, 3000));
    const pListen = env.processor.listen;
    await env.processor.kill();
    await new Promise((r) => setTimeout(r, 1000));
    env.processor = await startProcessor(path.join(env.dir, 'processor'), env.cacheStoreUrl, pListen);
    const fio = await workload;
    expect(fio.code).toBe(0); // the VM's writes kept working throughout
    await env.drained(vm);
    expect(await env.compare(vm)).toEqual([]);
  });
});
