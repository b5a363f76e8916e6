import { describe, expect, it } from 'vitest';
import { createTargetPlanner } from '../../src/failover/target-resources.js';
import { REGION } from './target-region-fixture.js';

describe('createTargetPlanner', () => {
  it('plans a failover from a partial config with the default rules', () => {
    const planner = createTargetPlanner();
    expect(
      planner.plan({
        vm: 'db01',
        source: { network: 'prod', subnet: 'data', ip: '10.0.2.9' },
        target: {},
        test: false,
      }),
    ).toEqual({
      resourceGroup: 'db01-asr',
      network: 'prod-asr',
      subnet: 'data',
      ip: '10.0.2.9',
      availabilitySet: null,
    });
    expect(planner.plan({ vm: 'db01', source: {}, target: {}, test: false })).toMatchObject({
      network: 'default-asr',
      subnet: 'default',
      ip: 'dhcp',
    });
  });

  it('puts a test failover in the network it names, by the same subnet and IP rules', () => {
    const planner = createTargetPlanner({
      region: REGION,
      networkMapping: { 'prod-vnet': 'prod-vnet-dr' },
      usedIps: () => ['172.16.8.20'],
    });
    const source = { network: 'prod-vnet', subnet: 'beta', ip: '172.16.8.20' };
    expect(planner.plan({ vm: 'web01', source, target: {}, test: false })).toMatchObject({
      network: 'prod-vnet-dr',
      subnet: 'apps',
      ip: '10.1.3.4',
    });
    expect(planner.plan({ vm: 'web01', source, target: {}, test: true, network: 'corp-asr' })).toMatchObject({
      network: 'corp-asr',
      subnet: 'beta',
      ip: '172.16.8.21',
    });
    expect(planner.plan({ vm: 'web01', source, target: {}, test: true, network: 'iso-net' })).toMatchObject({
      network: 'iso-net',
      subnet: 'beta',
      ip: '172.16.8.20',
    });
  });

  it('gives a VM the next free address when an earlier failover placed another VM on its address', () => {
    const planner = createTargetPlanner({ region: REGION, networkMapping: { 'prod-vnet': 'prod-vnet-dr' } });
    const source = { network: 'prod-vnet', subnet: 'web', ip: '10.1.1.10' };
    const first = planner.plan({ vm: 'web01', source, target: {}, test: false });
    const second = planner.plan({
      vm: 'web02',
      source,
      target: {},
      test: false,
      taken: [{ network: first.network, ip: first.ip }],
    });
    expect([first.ip, second.ip]).toEqual(['10.1.1.10', '10.1.1.11']);
  });
});
