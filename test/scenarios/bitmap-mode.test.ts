import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  ReplicationEnv,
  ThrottleProxy,
  requireTools,
  runFioOk,
  srJson,
  srOk,
  waitUntil,
  type ProtectedVm,
  type SrPoint,
} from '@site-recovery/test';

const MiB = 1 << 20;
/** A cap of 4 MiB in segments small enough that a drained journal falls below half of it. */
const JOURNAL_ARGS = ['--journal-max-bytes', String(4 * MiB), '--journal-segment-bytes', String(MiB)];

// DESIGN.md invariant 5: the VM never waits on the DR link. Past the journal's cap the agent tracks
// dirty regions in a persisted bitmap, resyncs them once the cache-store keeps up, and the processor
// cuts no recovery point from the replica in between.
describe('bitmap mode past the journal cap', () => {
  let env: ReplicationEnv;
  let proxy: ThrottleProxy;
  beforeAll(async () => {
    requireTools(['fio']);
    env = await ReplicationEnv.start('bitmap');
  });
  afterEach(async () => {
    await proxy?.close();
  });
  afterAll(async () => {
    await env?.close();
  });

  /** A VM whose agent reaches the cache-store through a proxy that can cut the link, drained and with points every second. */
  async function protect(name: string): Promise<ProtectedVm> {
    const [host, port] = env.cacheStore.listen.split(/:(?=\d+$)/) as [string, string];
    proxy = new ThrottleProxy(host, Number(port), { bytesPerSecond: Infinity, delayMs: 0 });
    await proxy.listen();
    const vm = await env.protect(name, [{ id: 'os', size: 256 * MiB }], {
      cacheStoreUrl: `ws://127.0.0.1:${proxy.port}`,
      args: JOURNAL_ARGS,
    });
    await env.drained(vm);
    await srOk(env.processor, ['configure', name, '--crash-consistent-frequency', '1s']);
    return vm;
  }

  /**
   * 32 MiB of 64 KiB random writes over the whole disk, eight in flight: eight times the journal's cap.
   * Where writes wait for the link at the cap, fio never finishes and is killed after 60 s.
   */
  function fill(vm: ProtectedVm): Promise<unknown> {
    return runFioOk(
      [
        '--name=fill',
        '--ioengine=nbd',
        `--uri=${vm.agent.uri('os')}`,
        '--rw=randwrite',
        '--bs=64k',
        '--iodepth=8',
        '--size=256m',
        '--io_size=32m',
        '--randrepeat=0',
        '--refill_buffers',
        // One process: a timeout's kill then ends the job too, instead of leaving it holding the pipes.
        '--thread',
      ],
      { timeoutMs: 60_000 },
    );
  }

  const points = (vm: ProtectedVm): Promise<SrPoint[]> => srJson<SrPoint[]>(env.processor, ['points', vm.name]);

  it('lets the VM write 32 MiB through a 4 MiB journal while the link is down, then resyncs the replica to the source', async () => {
    const vm = await protect('bm01');
    const before = await waitUntil(
      'a recovery point before the outage',
      async () => ((await points(vm)).length > 0 ? points(vm) : undefined),
      30_000,
      200,
    );
    proxy.partition();
    const forwarded = proxy.forwarded;
    await fill(vm);
    // fio finished while the link was down: nothing of it can have waited for the cache-store.
    expect(proxy.forwarded, 'no byte reached the cache-store during the fill').toBe(forwarded);
    const down = await env.agentStatus(vm);
    expect(down.stalledWrites).toBe(0);
    expect(down.journal.stalled).toBe(false);
    expect(down.mode).toMatchObject({ state: 'bitmap', entered: 1 });
    expect(down.mode!.dirtyBytes).toBeGreaterThan(4 * MiB);

    // The link returns slowly enough to watch the resync.
    proxy.options.bytesPerSecond = 16 * MiB;
    proxy.heal();
    const seen: string[] = [];
    let processorPercent = -1;
    const end = await waitUntil(
      'the agent to resync and stream again',
      async () => {
        const s = await env.agentStatus(vm);
        if (seen.at(-1) !== s.mode!.state) seen.push(s.mode!.state);
        const p = await env.processorVm(vm.name);
        if (p?.state === 'resyncing' && p.resync !== undefined)
          processorPercent = Math.max(processorPercent, p.resync.percent);
        return s.mode!.state === 'streaming' ? s.mode! : undefined;
      },
      120_000,
      50,
    );
    expect(seen).toEqual(['bitmap', 'resyncing', 'streaming']);
    // A progress marker every 16 MiB of the ~30 MiB resync: the processor's percentage moved.
    expect(processorPercent, 'the processor showed the replica resyncing, with a percentage').toBeGreaterThan(0);
    expect(processorPercent).toBeLessThan(100);
    await env.drained(vm);
    expect(await env.compare(vm)).toEqual([]);

    // Points resume after the resync; none lies between the marker that began bitmap mode and the end.
    const { startLsn, endLsn } = end.lastResync!;
    const after = await waitUntil(
      'a recovery point after the resync',
      async () => {
        const pts = await points(vm);
        return pts.some((p) => p.lsn >= endLsn) ? pts : undefined;
      },
      30_000,
      200,
    );
    expect(after.filter((p) => p.lsn >= startLsn && p.lsn < endLsn)).toEqual([]);
    const ids = new Set(after.map((p) => p.id));
    for (const p of before) expect(ids.has(p.id), `point ${p.id} from before the outage is still listed`).toBe(true);
  });

  it('takes bitmap mode up again after the agent is killed in it, and the replica still converges', async () => {
    const vm = await protect('bm02');
    proxy.partition();
    await fill(vm);
    const dirty = (await env.agentStatus(vm)).mode!;
    expect(dirty.state).toBe('bitmap');
    await vm.agent.kill();
    await env.startAgentFor(vm, { cacheStoreUrl: `ws://127.0.0.1:${proxy.port}`, args: JOURNAL_ARGS });
    const again = (await env.agentStatus(vm)).mode!;
    expect(again).toMatchObject({ state: 'bitmap', since: dirty.since });
    expect(again.dirtyBytes).toBeGreaterThanOrEqual(dirty.dirtyBytes);
    proxy.heal();
    await env.drained(vm);
    expect(await env.compare(vm)).toEqual([]);
  });
});
