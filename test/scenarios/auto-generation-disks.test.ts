import fs from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReplicationEnv, makeImage, requireTools, runOk, type ProtectedVm } from '@site-recovery/test';

const MiB = 1 << 20;

/** qemu-io writes of `pattern`, one MiB each at the given MiB offsets, on an NBD URI or an image file. */
function writes(target: string, pattern: number, mibs: readonly number[]): Promise<unknown> {
  const cmds = mibs.flatMap((m) => ['-c', `write -P ${pattern} ${m}M 1M`]);
  return runOk('qemu-io', ['-f', 'raw', target, ...cmds]);
}

// A disk changed while its agent was stopped: the journal no longer describes it, so the stream cannot
// continue. The agent begins a new generation by itself (a resized disk used to be refused with
// SR_STATE_MISMATCH; a replaced one went unnoticed and the replica silently kept the old disk's blocks).
describe('a disk that changed while the agent was stopped', () => {
  let env: ReplicationEnv;
  beforeAll(async () => {
    requireTools(['qemu-io', 'qemu-img']);
    env = await ReplicationEnv.start('autogen-disks');
  });
  afterAll(() => env?.close());

  /** Replicates a first generation (with data), stops the agent, and returns that generation. */
  async function replicated(vm: ProtectedVm): Promise<string> {
    await writes(vm.agent.uri('os'), 0x11, [0, 3, 9]);
    await env.drained(vm);
    expect(await env.compare(vm)).toEqual([]);
    const generation = (await env.agentStatus(vm)).generation!.id!;
    expect(await vm.agent.stop()).toBe(0);
    return generation;
  }

  /** Starts the agent again: a new generation for `cause`, said in the log and the status, then converges. */
  async function expectNewGeneration(vm: ProtectedVm, before: string, cause: string): Promise<void> {
    await env.startAgentFor(vm);
    const g = (await env.agentStatus(vm)).generation!;
    expect(g.cause).toBe(cause);
    expect(g.id).not.toBe(before);
    expect(g.previous[0]).toMatchObject({ id: before });
    const log = vm.agent.stderr();
    expect(log).toContain(`"cause":"${cause}"`);
    expect(log).toContain(`starting a new replication generation: ${g.message!}`);
    await writes(vm.agent.uri('os'), 0x44, [1, 5]);
    await env.drained(vm);
    expect(await env.compare(vm)).toEqual([]);
  }

  it('resized: begins a new generation, and the replica takes the new size and ends equal to the source', async () => {
    const vm = await env.protect('grow01', [{ id: 'os', size: 32 * MiB }]);
    const before = await replicated(vm);
    await runOk('qemu-img', ['resize', '-f', 'raw', vm.disks[0]!.path, `${48 * MiB}`]);
    await writes(vm.disks[0]!.path, 0x22, [40]); // the guest's new partition, written offline
    await expectNewGeneration(vm, before, 'disk-resized');
    expect((await env.processorVm(vm.name))!.disks[0]!.size).toBe(48 * MiB);
  });

  it('replaced: another file of the same size behind the path begins a new generation, and the replica follows it', async () => {
    const vm = await env.protect('swap01', [{ id: 'os', size: 32 * MiB }]);
    const before = await replicated(vm);
    const image = vm.disks[0]!.path;
    await fs.rm(image);
    await makeImage(image, 32 * MiB); // a restored or re-created disk: none of the old blocks
    await writes(image, 0x33, [2, 3]);
    await expectNewGeneration(vm, before, 'disk-replaced');
  });
});
