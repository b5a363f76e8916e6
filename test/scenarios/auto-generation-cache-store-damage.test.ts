import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReplicationEnv, requireTools, runFioOk, runOk, waitUntil } from '@site-recovery/test';

const MiB = 1 << 20;

/** 1 MiB writes of `pattern` at the given MiB offsets. */
function writes(uri: string, pattern: number, mibs: readonly number[]): Promise<unknown> {
  return runOk('qemu-io', ['-f', 'raw', uri, ...mibs.flatMap((m) => ['-c', `write -P ${pattern} ${m}M 1M`])]);
}

// The cache-store finds the stream it stored of a VM damaged (a bad sector under a segment the processor
// has not applied yet): it sets the VM aside and refuses its agent (SR_JOURNAL_CORRUPT) until a new
// generation replaces the damaged files. The agent begins one by itself; it used to need a restart with
// --resync.
describe('a stream the cache-store stored, damaged', () => {
  let env: ReplicationEnv;
  beforeAll(async () => {
    requireTools(['qemu-io', 'fio']);
    env = await ReplicationEnv.start('autogen-cs-damage', { cacheStore: { args: ['--segment-bytes', String(MiB)] } });
  });
  afterAll(() => env?.close());

  it('makes the agent begin a new generation, and the replica ends equal to the source', async () => {
    const vm = await env.protect('csdmg01', [{ id: 'os', size: 32 * MiB }]);
    await env.drained(vm);
    const before = (await env.agentStatus(vm)).generation!.id!;
    // Nothing is applied (so nothing released) while the VM writes segments' worth.
    await env.processor.stop();
    // Incompressible, so that the stored frames fill several 1 MiB segments.
    await runFioOk([
      '--name=seg',
      '--ioengine=nbd',
      `--uri=${vm.agent.uri('os')}`,
      '--rw=write',
      '--bs=1m',
      '--size=6m',
      '--refill_buffers',
    ]);
    await waitUntil(
      'the cache-store to hold the writes',
      async () => (await env.cacheStoreVm(vm.name))!.durableLsn === (await env.agentStatus(vm)).lsn || undefined,
      30_000,
    );
    await env.cacheStore.stop();
    const dir = path.join(env.dir, 'cache-store', 'vms', vm.name);
    const segments = (await fs.readdir(dir)).filter((n) => n.endsWith('.srs')).sort();
    expect(segments.length).toBeGreaterThan(2);
    const file = path.join(dir, segments[1]!);
    const buf = await fs.readFile(file);
    buf[buf.length >> 1] = buf[buf.length >> 1]! ^ 0xff; // inside a frame: its CRC no longer matches
    await fs.writeFile(file, buf);

    await env.startCacheStore(env.cacheStore.listen);
    const g = await waitUntil(
      'the agent to begin a new generation',
      async () => {
        const s = await env.agentStatus(vm);
        return s.generation?.id !== undefined && s.generation.id !== before ? s.generation : undefined;
      },
      30_000,
      100,
    );
    expect(g.cause).toBe('cache-store-damaged');
    expect(g.message).toContain('SR_JOURNAL_CORRUPT');
    expect(vm.agent.stderr()).toContain('continuity lost, starting a new replication generation: cache-store refused');
    await env.startProcessor(env.processor.listen);
    await writes(vm.agent.uri('os'), 0x32, [8, 9]);
    await env.drained(vm);
    expect(await env.compare(vm)).toEqual([]);
  });
});
