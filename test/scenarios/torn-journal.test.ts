import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RECORD_MAGIC } from '@site-recovery/shared';
import { ReplicationEnv, ThrottleProxy, requireTools, runOk, waitUntil, type ProtectedVm } from '@site-recovery/test';

const MiB = 1 << 20;

/** Eight 1 MiB writes of `pattern` at the start of the disk: eight journal records. */
function eightWrites(uri: string, pattern: number): Promise<unknown> {
  const cmds = Array.from({ length: 8 }, (_, i) => ['-c', `write -P ${pattern} ${i}M 1M`]).flat();
  return runOk('qemu-io', ['-f', 'raw', uri, ...cmds]);
}

// A host crash can cut the journal's unsynced tail after the cache-store already holds those records.
// The VM's next writes then take the same LSNs with other data: streaming on from the cache-store's
// position would skip them and leave the replica silently different from the source. The agent sees
// the cache-store ahead of its journal and begins a new generation by itself (it used to stop and ask
// for a restart with --resync).
describe('a journal that lost records the cache-store holds', () => {
  let env: ReplicationEnv;
  let proxy: ThrottleProxy;
  beforeAll(async () => {
    requireTools(['qemu-io']);
    env = await ReplicationEnv.start('torn');
    const [host, port] = env.cacheStore.listen.split(':') as [string, string];
    proxy = new ThrottleProxy(host, Number(port), { bytesPerSecond: Infinity, delayMs: 0 });
    await proxy.listen();
  });
  afterAll(async () => {
    await proxy?.close();
    await env?.close();
  });

  /**
   * The shipper refuses the cache-store's position (three records past the journal), nothing new went on
   * top of it, and the agent begins a new generation by itself, whose copy brings the replica back to
   * the source.
   */
  async function expectNewGeneration(vm: ProtectedVm, cacheStoreLsn: number, before: string): Promise<void> {
    const g = await waitUntil(
      'the agent to begin a new generation',
      async () => {
        const s = await env.agentStatus(vm);
        return s.generation?.id !== undefined && s.generation.id !== before ? s.generation : undefined;
      },
      30_000,
      100,
    );
    expect(g.cause).toBe('cache-store-ahead');
    expect(g.message).toMatch(
      new RegExp(`^SR_SEQUENCE: cache-store holds LSN ${cacheStoreLsn} .* reached only LSN ${cacheStoreLsn - 3} `),
    );
    expect(vm.agent.stderr()).toContain('continuity lost, starting a new replication generation: SR_SEQUENCE');
    await env.drained(vm);
    expect(await env.compare(vm)).toEqual([]);
  }

  it('begins a new generation by itself, even when the VM wrote past the cut before the cache-store answered', async () => {
    const vm = await env.protect('torn01', [{ id: 'os', size: 64 * MiB }], {
      cacheStoreUrl: `ws://127.0.0.1:${proxy.port}`,
    });
    await eightWrites(vm.agent.uri('os'), 0x11);
    const before = await env.drained(vm);
    const generation = (await env.agentStatus(vm)).generation!.id!;
    expect(await vm.agent.stop()).toBe(0);

    // The crash: the newest segment loses its last three records, cut cleanly where a record starts (the
    // file's size on disk fell back), so opening sees no damage and nothing says a record went missing.
    const newest = await newestSegment(vm.dataDir);
    const starts = await recordStarts(newest);
    const cut = starts.at(-3) ?? 0;
    expect(cut).toBeGreaterThan(0);
    await fs.truncate(newest, cut);

    // The agent comes back while the cache-store cannot be reached, and the VM writes eight records.
    proxy.partition();
    await env.startAgentFor(vm, { cacheStoreUrl: `ws://127.0.0.1:${proxy.port}` });
    await eightWrites(vm.agent.uri('os'), 0x22);
    const status = await env.agentStatus(vm);
    expect(status.lsn).toBeGreaterThan(before.appliedLsn); // past the cache-store's position
    proxy.heal();

    await expectNewGeneration(vm, before.appliedLsn, generation);
  });

  it('streams on across restarts when nothing was lost, the start recorded for the check let go once it passed', async () => {
    const vm = await env.protect('intact01', [{ id: 'os', size: 64 * MiB }]);
    const stateFile = path.join(vm.dataDir, 'agent-state.json');
    for (const pattern of [0x21, 0x22, 0x23]) {
      await eightWrites(vm.agent.uri('os'), pattern);
      await env.drained(vm);
      const rep = (JSON.parse(await fs.readFile(stateFile, 'utf8')) as { replication: Record<string, unknown> })
        .replication;
      expect(rep).not.toHaveProperty('unconfirmedFromLsn');
      expect(await vm.agent.stop()).toBe(0);
      await env.startAgentFor(vm);
    }
    await eightWrites(vm.agent.uri('os'), 0x24);
    await env.drained(vm);
    expect((await env.agentStatus(vm)).replication!.stream.state).toBe('streaming');
    expect(await env.compare(vm)).toEqual([]);
  });

  it('still begins a new generation when the agent restarted a second time before the cache-store answered', async () => {
    const vm = await env.protect('torn03', [{ id: 'os', size: 64 * MiB }], {
      cacheStoreUrl: `ws://127.0.0.1:${proxy.port}`,
    });
    await eightWrites(vm.agent.uri('os'), 0x55);
    const before = await env.drained(vm);
    const generation = (await env.agentStatus(vm)).generation!.id!;
    expect(await vm.agent.stop()).toBe(0);
    const newest = await newestSegment(vm.dataDir);
    await fs.truncate(newest, (await recordStarts(newest)).at(-3)); // three records lost, cleanly

    // Two starts while the cache-store cannot be reached, the VM writing eight records after each: by
    // the second start the journal reaches past the cache-store's position again.
    proxy.partition();
    const cacheStoreUrl = `ws://127.0.0.1:${proxy.port}`;
    await env.startAgentFor(vm, { cacheStoreUrl });
    await eightWrites(vm.agent.uri('os'), 0x66);
    expect(await vm.agent.stop()).toBe(0);
    await env.startAgentFor(vm, { cacheStoreUrl });
    await eightWrites(vm.agent.uri('os'), 0x77);
    expect((await env.agentStatus(vm)).lsn).toBeGreaterThan(before.appliedLsn + 8);
    proxy.heal();

    await expectNewGeneration(vm, before.appliedLsn, generation);
  });

  it('starts a new generation when opening after a machine crash had to cut a torn record, and the replica ends equal to the source', async () => {
    const vm = await env.protect('torn02', [{ id: 'os', size: 64 * MiB }]);
    await eightWrites(vm.agent.uri('os'), 0x33);
    await env.drained(vm);
    const generation = (await env.agentStatus(vm)).replication!.generation;
    expect(await vm.agent.stop()).toBe(0);

    // The machine crashed: the last checkpoint comes from an earlier boot, and the crash tore the last
    // record in the middle while the image holds its write all the same.
    const checkpoint = path.join(vm.dataDir, 'checkpoint.json');
    const c = JSON.parse(await fs.readFile(checkpoint, 'utf8')) as Record<string, unknown>;
    expect(c['bootId']).toBe((await fs.readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim());
    await fs.writeFile(checkpoint, JSON.stringify({ ...c, bootId: '00000000-0000-4000-8000-000000000000' }));
    const newest = await newestSegment(vm.dataDir);
    await fs.truncate(newest, (await recordStarts(newest)).at(-1)! + 1000);

    await env.startAgentFor(vm);
    expect(vm.agent.stderr()).toContain('starting a new replication generation');
    expect((await env.agentStatus(vm)).replication!.generation).not.toBe(generation);
    await eightWrites(vm.agent.uri('os'), 0x44);
    await env.drained(vm, 120_000);
    expect(await env.compare(vm)).toEqual([]);
  });

  it('keeps the writes the image holds when the journal is cut after a kill, instead of replaying older records over them', async () => {
    const vm = await env.protect('torn04', [{ id: 'os', size: 64 * MiB }]);
    await eightWrites(vm.agent.uri('os'), 0x55);
    await eightWrites(vm.agent.uri('os'), 0x66);
    await env.drained(vm);
    const generation = (await env.agentStatus(vm)).replication!.generation;
    expect(await vm.agent.stop()).toBe(0);

    // The agent died before its checkpoint passed the 0x55 writes, and the last 0x66 record (at 7 MiB),
    // whose write the image holds, is damaged: opening cuts it, and the older 0x55 record for the same
    // MiB is still in the journal.
    const checkpoint = path.join(vm.dataDir, 'checkpoint.json');
    const c = JSON.parse(await fs.readFile(checkpoint, 'utf8')) as Record<string, unknown>;
    await fs.writeFile(checkpoint, JSON.stringify({ ...c, lsn: 0 }));
    const newest = await newestSegment(vm.dataDir);
    const fh = await fs.open(newest, 'r+');
    try {
      await fh.write(Buffer.alloc(512, 0x99), 0, 512, (await recordStarts(newest)).at(-1)! + 4096);
    } finally {
      await fh.close();
    }

    await env.startAgentFor(vm);
    const image = await fs.readFile(vm.disks[0]!.path);
    expect(image.subarray(7 * MiB, 8 * MiB).equals(Buffer.alloc(MiB, 0x66))).toBe(true);
    expect(vm.agent.stderr()).toContain('journal: cut what a crash left unsynced');
    const g = (await env.agentStatus(vm)).generation;
    expect(g?.id).not.toBe(generation);
    expect(g?.cause).toBe('journal-lost-records');
    await env.drained(vm, 120_000);
    expect(await env.compare(vm)).toEqual([]);
  });
});

async function newestSegment(dataDir: string): Promise<string> {
  const journal = path.join(dataDir, 'journal');
  return path.join(
    journal,
    (await fs.readdir(journal))
      .filter((n) => n.endsWith('.srj'))
      .sort()
      .at(-1)!,
  );
}

/**
 * Offsets where the records of a segment start, found by their magic: the writes here fill their
 * data with one repeated byte, so the magic shows up nowhere else. A large record written direct
 * starts at a varying place (its header ends on a page), so the offsets are looked for, not assumed.
 */
async function recordStarts(file: string): Promise<number[]> {
  const buf = await fs.readFile(file);
  const magic = Buffer.alloc(4);
  magic.writeUInt32BE(RECORD_MAGIC);
  const out: number[] = [];
  for (let at = buf.indexOf(magic); at >= 0; at = buf.indexOf(magic, at + 4)) out.push(at);
  expect(out.length).toBeGreaterThanOrEqual(3);
  return out;
}
