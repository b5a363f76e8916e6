import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ReplicationEnv,
  ThrottleProxy,
  fioJobs,
  requireTools,
  startFio,
  waitUntil,
  type FioRun,
} from '@site-recovery/test';

const MiB = 1 << 20;
/**
 * The agent's link to the cache-store carries less than fio writes, so the agent always has records out
 * that the cache-store has not acknowledged: a kill then lands on records in flight, not on an idle stream.
 */
const LINK_BYTES_PER_SECOND = 8 * MiB;

// kill -9 of the cache-store, then of the processor, each while records are in flight to it (and the
// test checks that they were): after the stream drains the replicas are identical — no acknowledged
// record lost, none misapplied.
describe('crash and restart of the services mid-workload', () => {
  let env: ReplicationEnv;
  let proxy: ThrottleProxy;
  let fio: FioRun | undefined;
  beforeAll(async () => {
    requireTools(['fio']);
    env = await ReplicationEnv.start('crash');
    const [host, port] = env.cacheStore.listen.split(':') as [string, string];
    proxy = new ThrottleProxy(host, Number(port), { bytesPerSecond: LINK_BYTES_PER_SECOND, delayMs: 0 });
    await proxy.listen();
  });
  afterAll(async () => {
    fio?.interrupt();
    await fio?.done;
    await proxy?.close();
    await env?.close();
  });

  it('survives kill -9 of the cache-store and of the processor while records are in flight to each', async () => {
    const vm = await env.protect(
      'crash01',
      [{ id: 'os', size: 256 * MiB, extents: [{ offset: 0, length: 16 * MiB }] }],
      {
        cacheStoreUrl: `ws://127.0.0.1:${proxy.port}`,
      },
    );
    await env.drained(vm);
    // Runs until the kills are done (SIGINT then ends it); the runtime is only a backstop.
    fio = startFio(
      [
        '--output-format=json',
        '--name=w',
        '--ioengine=nbd',
        `--uri=${vm.agent.uri('os')}`,
        '--rw=randwrite',
        '--bsrange=4k-128k',
        '--iodepth=16',
        '--size=256m',
        '--rate=16m',
        '--time_based',
        '--runtime=600',
      ],
      { timeoutMs: 660_000 },
    );
    const agentStream = async (): Promise<{ lsn: number; ackedLsn: number; sentLsn: number; state: string }> => {
      const s = await env.agentStatus(vm);
      return { lsn: s.lsn, ...s.replication!.stream };
    };

    // 1. The cache-store dies with at least a MiB of records sent to it and not acknowledged.
    const sending = await waitUntil(
      'the agent to have 1 MiB of records sent to the cache-store and not acknowledged',
      async () => {
        const s = (await env.agentStatus(vm)).replication?.stream;
        return s?.state === 'streaming' && s.sentLsn > s.ackedLsn && s.inFlightBytes >= MiB ? s : undefined;
      },
      60_000,
      50,
    );
    const csListen = env.cacheStore.listen;
    await env.cacheStore.kill();
    const cut = await agentStream();
    expect(cut.ackedLsn, 'the cache-store was killed with records in flight to it').toBeLessThan(sending.sentLsn);
    await waitUntil(
      'the agent to journal writes while the cache-store is down',
      async () => ((await agentStream()).lsn > cut.lsn ? true : undefined),
      30_000,
      50,
    );
    await env.startCacheStore(csListen);
    await waitUntil(
      `the restarted cache-store to acknowledge past LSN ${sending.sentLsn}, which the killed one never did`,
      async () => {
        const s = await agentStream();
        return s.state === 'streaming' && s.ackedLsn > sending.sentLsn ? true : undefined;
      },
      60_000,
      100,
    );

    // 2. The processor dies with records the cache-store holds for it that it has not applied yet.
    const applying = await waitUntil(
      'the processor to be behind the cache-store (records stored for it, not yet applied)',
      async () => {
        const p = await env.processorVm(vm.name);
        if (p?.cacheStoreLastLsn == null || !(await env.cacheStoreVm(vm.name))?.processorSubscribed) return undefined;
        return p.pendingRecords > 0 ? { ...p, cacheStoreLastLsn: p.cacheStoreLastLsn } : undefined;
      },
      60_000,
      50,
    );
    const pListen = env.processor.listen;
    await env.processor.kill();
    // What it confirmed is final now. Below `cacheStoreLastLsn`, it died before it had applied and confirmed
    // the records the cache-store held for it, which the restarted processor must take again.
    const held = (await env.cacheStoreVm(vm.name))!;
    expect(held.appliedLsn, 'the processor was killed with records stored for it not yet confirmed').toBeLessThan(
      applying.cacheStoreLastLsn,
    );
    await waitUntil(
      'the cache-store to store writes while the processor is down',
      async () => ((await env.cacheStoreVm(vm.name))!.durableLsn > held.durableLsn ? true : undefined),
      30_000,
      50,
    );
    await env.startProcessor(pListen);
    await waitUntil(
      `the restarted processor to apply past LSN ${applying.cacheStoreLastLsn}, where the killed one stopped short`,
      async () => ((await env.processorVm(vm.name))!.appliedLsn > applying.cacheStoreLastLsn ? true : undefined),
      60_000,
      100,
    );

    // The VM's writes kept working throughout: fio, stopped only now, saw no I/O error.
    fio.interrupt();
    const r = await fio.done;
    fio = undefined;
    const [job] = fioJobs(r.stdout);
    expect(job!.error, `fio's error; its stderr: ${r.stderr.slice(-2000)}`).toBe(0);
    expect(job!.write.io_bytes).toBeGreaterThan(0);

    proxy.options.bytesPerSecond = Infinity;
    await env.drained(vm);
    expect(await env.compare(vm)).toEqual([]);
  });
});
