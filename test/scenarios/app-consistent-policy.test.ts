import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReplicationEnv, requireTools, runOk, srJson, srOk, waitUntil, type SrPoint } from '@site-recovery/test';

// The replication policy set with `sr configure` reaches the agent through the cache-store: the agent
// runs its own pre/post-snapshot commands at the policy's frequency, and the processor turns each
// marker into an app-consistent point. The agent is started without any frequency of its own.
describe('app-consistent points driven by the replication policy', () => {
  let env: ReplicationEnv;
  beforeAll(async () => {
    requireTools(['qemu-io']);
    env = await ReplicationEnv.start('app-policy');
  });
  afterAll(() => env?.close());

  it('sr configure --app-consistent-frequency makes the agent mark points; they list as kind "app"', async () => {
    const log = path.join(env.dir, 'hooks.log');
    const vm = await env.protect('appvm01', [{ id: 'os', size: 32 << 20 }], {
      args: ['--pre-snapshot', `echo freeze >> ${log}`, '--post-snapshot', `echo thaw >> ${log}`],
    });
    await env.drained(vm);
    await srOk(env.processor, [
      'configure',
      'appvm01',
      '--app-consistent-frequency',
      '1s',
      '--crash-consistent-frequency',
      '1h',
    ]);
    await runOk('qemu-io', ['-f', 'raw', vm.agent.uri('os'), '-c', 'write -P 0x61 0 1M']);
    const points = await waitUntil(
      'two app-consistent points',
      async () => {
        const p = await srJson<SrPoint[]>(env.processor, ['points', 'appvm01', '--json']);
        return p.filter((x) => x.kind === 'app').length >= 2 ? p : undefined;
      },
      30_000,
      500,
    );
    expect(points.filter((p) => p.kind === 'app').length).toBeGreaterThanOrEqual(2);
    // Each point was taken between a freeze and a thaw, which ran in pairs.
    expect(await fsp.readFile(log, 'utf8')).toMatch(/^(freeze\nthaw\n)+(freeze\n)?$/);
    // Turning the frequency up again stops the points at the agent.
    await srOk(env.processor, ['configure', 'appvm01', '--app-consistent-frequency', '24h']);
    const status = await waitUntil(
      'the agent to take the new frequency',
      async () => {
        const s = (await env.agentStatus(vm)) as { replication?: { appConsistent?: { frequencyMs: number } } };
        return s.replication?.appConsistent?.frequencyMs === 86_400_000 ? s : undefined;
      },
      10_000,
    );
    expect(status).toBeDefined();
  });
});
