import type { PlanTargetInput, RegionDefaults } from '../../src/failover/target-resources.js';

// What the planner tests share: a target region, a VM in it, and a way to vary one field at a time.

// The target region of most rows: a mapped network with three subnets and a second network.
export const REGION: RegionDefaults = {
  networks: [
    {
      name: 'prod-vnet-dr',
      subnets: [
        { name: 'web', cidr: '10.1.1.0/24' },
        { name: 'db', cidr: '10.1.2.0/29' }, // 8 addresses, usable .4 .5 .6
        { name: 'apps', cidr: '10.1.3.0/24' },
      ],
    },
    {
      name: 'corp-asr',
      subnets: [
        { name: 'zeta', cidr: '172.16.9.0/24' },
        { name: 'beta', cidr: '172.16.8.0/24' },
      ],
    },
    { name: 'empty-vnet', subnets: [] },
  ],
};

export const base: PlanTargetInput = {
  vm: 'web01',
  source: { network: 'prod-vnet', subnet: 'web', ip: '10.1.1.10' },
  region: REGION,
  networkMapping: { 'prod-vnet': 'prod-vnet-dr' },
};

type InputPatch = Partial<Omit<PlanTargetInput, 'source'>> & { source?: Partial<PlanTargetInput['source']> };

export function input(patch: InputPatch): PlanTargetInput {
  return { ...base, ...patch, source: { ...base.source, ...patch.source } };
}
