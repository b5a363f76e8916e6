import { describe, expect, it } from 'vitest';
import { useProcessorCases } from '../processor-cases.js';
import { api, getStatus, startProcessor } from '../helpers.js';
import { DISKS, GROUP, sr, type ApiError } from './group-fixture.js';

const cases = useProcessorCases('group-config');

describe('a group multi-VM frequency', () => {
  it('reaches every member agent through the real cache-store, from the default to each change, across a restart', async () => {
    const c = await cases.start();
    const listen = c.processor.listen;
    const db1 = await c.cs.agent('db1', 'g1', DISKS, GROUP);
    const web1 = await c.cs.agent('web1', 'g1', DISKS, GROUP);
    const solo = await c.cs.agent('solo', 'g1', DISKS);
    for (const a of [db1, web1])
      expect(await a.policy('the default 5 min', (p) => p.multiVmFrequencyMs === 300_000)).toEqual({
        t: 'policy',
        vm: a.vm,
        appConsistentFrequencyMs: 3_600_000,
        multiVmFrequencyMs: 300_000,
      });
    expect(await solo.policy('its app-consistent frequency', () => true)).toEqual({
      t: 'policy',
      vm: 'solo',
      appConsistentFrequencyMs: 3_600_000,
    });

    const set = await sr(listen, ['configure-group', GROUP, '--multi-vm-frequency', '2s']);
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toBe('multiVmFrequency: 2s\n');
    for (const a of [db1, web1]) await a.policy('2 s', (p) => p.multiVmFrequencyMs === 2000);

    // Refused whole, with a stable code; nothing changes.
    const refused: [unknown, string][] = [
      [{ multiVmFrequencyMs: 999 }, 'SR_BAD_OPTION'],
      [{ multiVmFrequencyMs: 1500.5 }, 'SR_BAD_OPTION'],
      [{ multiVmFrequencyMs: '2s' }, 'SR_BAD_OPTION'],
      [{ multiVmFrequencyMs: 5000, every: 1 }, 'SR_BAD_OPTION'],
    ];
    for (const [body, code] of refused) {
      const r = await api<ApiError>(listen, 'PUT', `/groups/${GROUP}/config`, body);
      expect([r.status, r.body.code], JSON.stringify(body)).toEqual([400, code]);
    }
    const badName = await api<ApiError>(listen, 'PUT', '/groups/no%20such!/config', { multiVmFrequencyMs: 5000 });
    expect([badName.status, badName.body.code]).toEqual([400, 'SR_BAD_ID']);
    const cli = await sr(listen, ['configure-group', GROUP, '--multi-vm-frequency', '0s']);
    expect(cli.code).toBe(2);
    expect(cli.stderr).toMatch(/^sr: SR_BAD_OPTION: --multi-vm-frequency must be at least 1s/);
    const shown = await sr(listen, ['configure-group', GROUP, '--json']);
    expect(JSON.parse(shown.stdout)).toEqual({ multiVmFrequencyMs: 2000 });

    // A VM's own policy change carries its group's frequency too.
    await api(listen, 'PUT', '/vms/web1/config', { appConsistentFrequencyMs: 7_200_000 });
    await web1.policy('both', (p) => p.appConsistentFrequencyMs === 7_200_000 && p.multiVmFrequencyMs === 2000);

    const status = await getStatus(listen);
    expect(status.groups).toEqual([
      {
        name: GROUP,
        members: ['db1', 'web1'],
        multiVmFrequencyMs: 2000,
        rounds: { completed: 0, failed: 0, pending: 0 },
      },
    ]);
    expect(status.vms.map((v) => [v.vm, v.group]).sort()).toEqual([
      ['db1', GROUP],
      ['solo', null],
      ['web1', GROUP],
    ]);

    // Persisted: a restarted processor sends the group's frequency again with its subscriptions.
    await c.processor.close();
    const before = db1.policies.length;
    const again = await startProcessor(c.dataDir, c.cs.url);
    try {
      await db1.policy('2 s again', (p) => db1.policies.indexOf(p) >= before && p.multiVmFrequencyMs === 2000);
      expect((await api(again.listen, 'GET', `/groups/${GROUP}/config`)).body).toEqual({ multiVmFrequencyMs: 2000 });
      // A VM that joins the group later is told at once.
      await solo.close();
      const joined = await c.cs.agent('solo', 'g1', DISKS, GROUP);
      await joined.policy("the group's 2 s", (p) => p.multiVmFrequencyMs === 2000);
      expect((await getStatus(again.listen)).groups[0]?.members).toEqual(['db1', 'solo', 'web1']);
    } finally {
      await again.close();
    }
  });
});
