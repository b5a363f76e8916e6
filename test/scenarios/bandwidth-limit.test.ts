import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReplicationEnv, ThrottleProxy, requireTools, runFioOk, waitUntil } from '@site-recovery/test';

const MiB = 1 << 20;
const RATE = 2 * MiB;
const WRITTEN = 16 * MiB;
/** fio's block size: each record stays well under the limit's burst, so no frame is larger than the burst. */
const BLOCK = 256 * 1024;
/**
 * What the meter counts besides the batches the bucket charges: the HTTP upgrade with its token proof,
 * the hello, WebSocket frame headers, pongs, and wire record headers past the journal bytes a batch read.
 */
const PROTOCOL_SLACK = 128 * 1024;

// The agent's --max-bandwidth against a link that could carry far more: a meter (an unthrottled proxy)
// counts every byte the agent sends to the cache-store, and the VM writes through NBD meanwhile.
describe('--max-bandwidth', () => {
  let env: ReplicationEnv;
  let meter: ThrottleProxy;
  beforeAll(async () => {
    requireTools(['fio']);
    env = await ReplicationEnv.start('bandwidth');
    const [host, port] = env.cacheStore.listen.split(':') as [string, string];
    meter = new ThrottleProxy(host, Number(port), { bytesPerSecond: Infinity, delayMs: 0 });
    await meter.listen();
  });
  afterAll(async () => {
    await meter?.close();
    await env?.close();
  });

  it("caps the bytes sent to the cache-store, never the VM's writes, and the replica converges", async () => {
    // Every sample is (bytes the meter had forwarded, then the time): those bytes left the agent before that
    // time, and the agent started after t0, so each sample is bounded by rate × elapsed + burst.
    const samples: { ms: number; bytes: number }[] = [];
    const t0 = performance.now();
    const sample = (): void => {
      const bytes = meter.forwarded;
      samples.push({ ms: performance.now() - t0, bytes });
    };
    const sampler = setInterval(sample, 10);
    try {
      const vm = await env.protect('bw01', [{ id: 'os', size: 64 * MiB }], {
        cacheStoreUrl: `ws://127.0.0.1:${meter.port}`,
        args: ['--max-bandwidth', '2M'],
      });
      const bandwidth = async () => (await env.agentStatus(vm)).replication!.stream.bandwidth;
      const limit = await bandwidth();
      expect(limit).toMatchObject({ limitBytesPerSecond: RATE });
      expect(limit.burstBytes).toBeGreaterThan(BLOCK);

      await runFioOk(
        [
          '--name=bw',
          '--ioengine=nbd',
          `--uri=${vm.agent.uri('os')}`,
          '--rw=write',
          `--bs=${BLOCK}`,
          '--iodepth=8',
          `--size=${WRITTEN}`,
          '--refill_buffers', // incompressible: the wire carries what was written
        ],
        { timeoutMs: 60_000 },
      );
      const sentWhenWritten = meter.forwarded;
      const atWritten = await env.agentStatus(vm);
      // The writer did not wait for the link: it was done while most of what it wrote had still to go.
      expect(sentWhenWritten, 'bytes sent when fio finished').toBeLessThan(WRITTEN);
      expect(atWritten.journal.stalled).toBe(false);
      expect(atWritten.replication!.stream.ackedLsn).toBeLessThan(atWritten.lsn);

      await waitUntil(
        'the status to show sending held by the bandwidth limit',
        async () => ((await bandwidth()).held ? true : undefined),
        30_000,
        20,
      );
      await env.drained(vm, 120_000);
      sample();
      expect(await env.compare(vm)).toEqual([]);
      expect((await bandwidth()).heldMs).toBeGreaterThan(0);

      const last = samples[samples.length - 1]!;
      expect(last.bytes, 'the meter saw the data go through').toBeGreaterThanOrEqual(WRITTEN);
      const over = samples.filter((s) => s.bytes > (RATE * s.ms) / 1000 + limit.burstBytes + PROTOCOL_SLACK);
      expect(over, `samples past ${RATE} B/s × elapsed + burst ${limit.burstBytes}`).toEqual([]);
    } finally {
      clearInterval(sampler);
    }
  });
});
