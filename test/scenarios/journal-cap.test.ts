import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReplicationEnv, requireTools, runOk } from '@site-recovery/test';

const MiB = 1 << 20;
const SEGMENT = 4 * MiB;
const CAP = 8 * SEGMENT;

// The journal's cap against a checkpoint interval far longer than the test: shipped segments are
// released only below a checkpoint, so without the early checkpoint at half the cap the VM's writes
// would wait at 32 MiB until the interval came round, ten minutes from now.
describe('journal cap with a long checkpoint interval', () => {
  let env: ReplicationEnv;
  beforeAll(async () => {
    requireTools(['fio']);
    env = await ReplicationEnv.start('cap');
  });
  afterAll(async () => {
    await env?.close();
  });

  it('checkpoints early as the journal fills, so writes many times the cap go through and replicate', async () => {
    const args = ['--journal-segment-bytes', String(SEGMENT), '--journal-max-bytes', String(CAP), '--checkpoint-interval', '600000'];
    const vm = await env.protect('cap01', [{ id: 'os', size: 256 * MiB }], { args });
    let peak = 0;
    const sampler = setInterval(() => {
      void env.agentStatus(vm).then((s) => (peak = Math.max(peak, s.journal.bytes)), () => undefined);
    }, 50);
    // 192 MiB: six times the cap.
    await runOk('fio', ['--name=fill', '--ioengine=nbd', `--uri=${vm.agent.uri('os')}`, '--rw=write', '--bs=1m', '--iodepth=8', '--size=192m', '--refill_buffers'], { timeoutMs: 60_000 });
    clearInterval(sampler);
    const s = await env.agentStatus(vm);
    expect(s.checkpointLsn).toBeGreaterThan(0); // only the early checkpoints can have moved it
    expect(peak).toBeLessThanOrEqual(CAP + 32 * MiB); // the cap, plus at most one write past it
    await env.drained(vm, 120_000);
    expect(await env.compare(vm)).toEqual([]);
  });
});
