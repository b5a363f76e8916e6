import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RECORD_MAGIC } from '@site-recovery/shared';
import { ReplicationEnv, ThrottleProxy, requireTools, runOk, waitUntil, type ProtectedVm } from '@site-recovery/test';

const MiB = 1 << 20;
/** Segments of 1 MiB: each 1 MiB write rolls one, so there is damage to make below the newest. */
const ARGS = ['--journal-segment-bytes', String(MiB)];

/** 1 MiB writes of `pattern` at the given MiB offsets: one journal record each. */
function writes(uri: string, pattern: number, mibs: readonly number[]): Promise<unknown> {
  return runOk('qemu-io', ['-f', 'raw', uri, ...mibs.flatMap((m) => ['-c', `write -P ${pattern} ${m}M 1M`])]);
}

/** Flips one payload byte of the first record of the `n`th oldest journal segment; returns the file's name. */
async function damage(dataDir: string, n: number): Promise<string> {
  const dir = path.join(dataDir, 'journal');
  const name = (await fs.readdir(dir)).filter((f) => f.endsWith('.srj')).sort()[n]!;
  const file = path.join(dir, name);
  const buf = await fs.readFile(file);
  const magic = Buffer.alloc(4);
  magic.writeUInt32BE(RECORD_MAGIC);
  // The writes fill their data with one repeated byte, so the magic starts a record and nothing else.
  const at = buf.indexOf(magic);
  expect(at).toBeGreaterThan(0);
  buf[at + 4096] = buf[at + 4096]! ^ 0xff; // inside its 1 MiB payload
  await fs.writeFile(file, buf);
  return name;
}

// A journal damaged where it had been synced (a bad sector, a stray write) cannot prove the stream
// continuous. The agent begins a new generation by itself, whether it finds the damage when it opens
// the journal (it used to refuse to start, SR_JOURNAL_CORRUPT) or when the shipper reads it (the
// shipper used to fail on it again and again, and nothing replicated).
describe('a damaged journal', () => {
  let env: ReplicationEnv;
  let proxy: ThrottleProxy;
  beforeAll(async () => {
    requireTools(['qemu-io']);
    env = await ReplicationEnv.start('autogen-damage');
    const [host, port] = env.cacheStore.listen.split(':') as [string, string];
    proxy = new ThrottleProxy(host, Number(port), { bytesPerSecond: Infinity, delayMs: 0 });
    await proxy.listen();
  });
  afterAll(async () => {
    await proxy?.close();
    await env?.close();
  });

  async function expectNewGeneration(vm: ProtectedVm, before: string, file: string): Promise<void> {
    const g = await waitUntil(
      'the agent to begin a new generation',
      async () => {
        const s = await env.agentStatus(vm);
        return s.generation?.id !== undefined && s.generation.id !== before ? s.generation : undefined;
      },
      30_000,
      100,
    );
    expect(g.cause).toBe('journal-damaged');
    expect(g.message).toContain(file);
    expect(vm.agent.stderr()).toContain('"cause":"journal-damaged"');
    await writes(vm.agent.uri('os'), 0x44, [2, 12]);
    await env.drained(vm);
    expect(await env.compare(vm)).toEqual([]);
  }

  it('found when the agent opens it: a new generation, and the replica ends equal to the source', async () => {
    const vm = await env.protect('dmg01', [{ id: 'os', size: 32 * MiB }], { args: ARGS });
    await writes(vm.agent.uri('os'), 0x11, [0, 1, 2, 3, 4, 5]);
    await env.drained(vm);
    const before = (await env.agentStatus(vm)).generation!.id!;
    expect(await vm.agent.stop()).toBe(0);
    const file = await damage(vm.dataDir, 1); // below the checkpoint the clean stop wrote

    await env.startAgentFor(vm, { args: ARGS });
    expect(vm.agent.stderr()).toContain('the journal is damaged where it was synced');
    await expectNewGeneration(vm, before, file);
  });

  it('found by the shipper while the agent runs: a new generation, and the replica ends equal to the source', async () => {
    const cacheStoreUrl = `ws://127.0.0.1:${proxy.port}`;
    const vm = await env.protect('dmg02', [{ id: 'os', size: 32 * MiB }], { cacheStoreUrl, args: ARGS });
    await writes(vm.agent.uri('os'), 0x21, [0, 1]);
    await env.drained(vm);
    const before = (await env.agentStatus(vm)).generation!.id!;
    const shipped = (await fs.readdir(path.join(vm.dataDir, 'journal'))).length;

    // The link is down while the VM writes: the records wait in the journal files, unread.
    proxy.partition();
    await writes(vm.agent.uri('os'), 0x22, [4, 5, 6, 7, 8, 9]);
    const file = await damage(vm.dataDir, shipped + 1);
    proxy.heal();
    await expectNewGeneration(vm, before, file);
  });
});
