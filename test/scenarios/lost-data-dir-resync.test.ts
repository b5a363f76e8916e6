import { randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReplicationEnv, requireTools, runOk } from '@site-recovery/test';

const MiB = 1 << 20;
const BLOCK = 4096;

/** The parts of the agent's status this test reads (agent/README.md, "Checksum resync"). */
interface ResyncStatus {
  replication: {
    generation: string;
    stream: { rawBytesSent: number; reconnects: number };
    initialCopy: {
      state: string;
      method?: string;
      fullCopyReason?: string;
      comparedBytes?: number;
      equalBytes?: number;
      sentBytes?: number;
      zeroedBytes?: number;
    };
  };
}

// The agent loses its data dir while the replica is live, and the image changes behind its back
// meanwhile: the agent's next start is a new generation, whose initial copy asks the processor for the
// replica's block sums and sends only the blocks that differ, while the VM writes on. The replica ends
// byte-identical, and the status and the bytes on the wire show the count.
describe('a lost agent data dir on a live replica', () => {
  let env: ReplicationEnv;
  beforeAll(async () => {
    requireTools(['qemu-io']);
    env = await ReplicationEnv.start('lostdir');
  });
  afterAll(() => env?.close());

  it('the resync sends only the differing blocks (counted), and the replica converges', async () => {
    const vm = await env.protect('lost01', [
      {
        id: 'os',
        size: 256 * MiB,
        extents: [
          { offset: 0, length: 24 * MiB },
          { offset: 100 * MiB, length: 16 * MiB },
        ],
      },
    ]);
    await env.drained(vm);
    expect(await env.compare(vm)).toEqual([]);
    const before = (await env.agentStatus(vm)) as unknown as ResyncStatus;

    await vm.agent.stop();
    await fsp.rm(vm.dataDir, { recursive: true, force: true });
    // N known blocks change behind the agent's back: new data in data and in zero areas, and data
    // blocks that become zeroes. None of them neighbours another, so each is one record.
    const data = [3, 1000, 5000, 12_345, 25_601, 26_000, 40_000, 65_535];
    const zeroed = [7, 2000, 25_700];
    const image = await fsp.open(vm.disks[0]!.path, 'r+');
    for (const b of data) await image.write(randomBytes(BLOCK), 0, BLOCK, b * BLOCK);
    for (const b of zeroed) await image.write(Buffer.alloc(BLOCK), 0, BLOCK, b * BLOCK);
    await image.close();
    const n = data.length + zeroed.length;

    await env.startAgentFor(vm);
    // The VM writes K other blocks while the resync runs: the copy sends each of those too when the
    // replica's sum of it was taken before the write arrived there, so it sends N to N + K blocks.
    const written = [50, 9000, 30_000, 60_000];
    await runOk('qemu-io', [
      '-f',
      'raw',
      vm.agent.uri('os'),
      ...written.flatMap((b) => ['-c', `write -P 0x77 ${b * BLOCK} ${BLOCK}`]),
      '-c',
      'flush',
    ]);
    await env.drained(vm);
    expect(await env.compare(vm)).toEqual([]);

    const after = (await env.agentStatus(vm)) as unknown as ResyncStatus;
    expect(after.replication.generation).not.toBe(before.replication.generation);
    const copy = after.replication.initialCopy;
    expect(copy).toMatchObject({ state: 'done', method: 'difference', comparedBytes: 256 * MiB });
    const sent = copy.sentBytes! / BLOCK;
    const zeroes = copy.zeroedBytes! / BLOCK;
    expect(zeroes).toBe(zeroed.length);
    expect(sent).toBeGreaterThanOrEqual(data.length);
    expect(sent).toBeLessThanOrEqual(data.length + written.length);
    expect(copy.equalBytes).toBe(256 * MiB - (sent + zeroes) * BLOCK);
    expect(sent + zeroes).toBeGreaterThanOrEqual(n);
    // On the wire, the only payloads: the blocks the copy sent and the VM's own writes.
    expect(after.replication.stream.reconnects).toBe(0);
    expect(after.replication.stream.rawBytesSent).toBe(copy.sentBytes! + written.length * BLOCK);
  });
});
