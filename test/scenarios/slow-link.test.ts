import fs from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReplicationEnv, ThrottleProxy, requireTools, runFioOk } from '@site-recovery/test';

async function rssBytes(pid: number): Promise<number> {
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

// A slow link between agent and cache-store: the journal absorbs the burst, the agent's memory stays
// bounded, and the VM's writes keep working; once the link is fast again the replica catches up.
describe('slow link between agent and cache-store', () => {
  let env: ReplicationEnv;
  let proxy: ThrottleProxy;
  beforeAll(async () => {
    requireTools(['fio']);
    env = await ReplicationEnv.start('slow');
    const [host, port] = env.cacheStore.listen.split(':') as [string, string];
    proxy = new ThrottleProxy(host, Number(port), { bytesPerSecond: 4 << 20, delayMs: 20 });
    await proxy.listen();
  });
  afterAll(async () => {
    await proxy?.close();
    await env?.close();
  });

  it('keeps agent memory bounded and writes flowing, then drains to an identical replica', async () => {
    const vm = await env.protect('slow01', [{ id: 'os', size: 512 << 20 }], {
      cacheStoreUrl: `ws://127.0.0.1:${proxy.port}`,
    });
    const pid = vm.agent.child.pid!;
    let peak = 0;
    const sampler = setInterval(() => {
      void rssBytes(pid).then(
        (r) => (peak = Math.max(peak, r)),
        () => undefined,
      );
    }, 100);
    // ~400 MB of random writes against a 4 MB/s link: 100x more than the link carries meanwhile.
    await runFioOk([
      '--name=burst',
      '--ioengine=nbd',
      `--uri=${vm.agent.uri('os')}`,
      '--rw=write',
      '--bs=1m',
      '--iodepth=8',
      '--size=400m',
      '--refill_buffers',
    ]);
    const during = await env.agentStatus(vm);
    clearInterval(sampler);
    expect(during.replication!.stream.ackedLsn).toBeLessThan(during.lsn); // the link really was the bottleneck
    expect(peak).toBeLessThan(350 << 20); // not the 400 MB written, nor a multiple of it
    proxy.options.bytesPerSecond = Infinity;
    proxy.options.delayMs = 0;
    await env.drained(vm, 180_000);
    expect(await env.compare(vm)).toEqual([]);
  });
});
