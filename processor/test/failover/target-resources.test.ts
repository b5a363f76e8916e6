import { ErrorCode, isSrError } from '@site-recovery/shared';
import { describe, expect, it } from 'vitest';
import { planTarget, type PlanTargetInput, type TargetPlacement } from '../../src/failover/target-resources.js';
import { REGION, base, input } from './target-region-fixture.js';

type Expected = Partial<Omit<TargetPlacement, 'reasons'>> & { reasons?: Partial<TargetPlacement['reasons']> };
type Row = [name: string, input: PlanTargetInput, expected: Expected];

const rows: Row[] = [
  // resource group
  [
    'resource group: <vm>-asr when nothing is set',
    input({}),
    { resourceGroup: 'web01-asr', reasons: { resourceGroup: 'vm-default' } },
  ],
  [
    'resource group: region default',
    input({ region: { ...REGION, resourceGroup: 'dr-rg' } }),
    { resourceGroup: 'dr-rg', reasons: { resourceGroup: 'region-default' } },
  ],
  [
    'resource group: per-VM override beats the region default',
    input({ region: { ...REGION, resourceGroup: 'dr-rg' }, overrides: { resourceGroup: 'web-rg' } }),
    { resourceGroup: 'web-rg', reasons: { resourceGroup: 'override' } },
  ],
  // network
  [
    'network: by network mapping',
    input({}),
    { network: 'prod-vnet-dr', created: false, reasons: { network: 'network-mapping' } },
  ],
  [
    'network: no mapping → source name + -asr, existing in the region',
    input({ source: { network: 'corp', subnet: 'beta', ip: 'dhcp' }, networkMapping: {} }),
    { network: 'corp-asr', subnet: 'beta', created: false, reasons: { network: 'asr-suffix', subnet: 'same-name' } },
  ],
  [
    'network: no mapping and not in the region → to be created with the source subnet',
    input({ source: { network: 'lab', subnet: 'front', ip: '192.168.5.20', subnetCidr: '192.168.5.0/24' } }),
    {
      network: 'lab-asr',
      subnet: 'front',
      subnetCidr: '192.168.5.0/24',
      ip: '192.168.5.20',
      created: true,
      reasons: { network: 'asr-suffix', subnet: 'created', ip: 'same-address' },
    },
  ],
  [
    'network: created without a known CIDR keeps the static address',
    input({ source: { network: 'lab', subnet: 'front', ip: '192.168.5.20' } }),
    { network: 'lab-asr', subnet: 'front', ip: '192.168.5.20', created: true },
  ],
  [
    'network: used IPs do not apply to a network that is to be created',
    input({
      source: { network: 'lab', subnet: 'front', ip: '192.168.5.20', subnetCidr: '192.168.5.0/24' },
      usedIps: ['192.168.5.20'],
    }),
    { ip: '192.168.5.20', created: true },
  ],
  [
    'network: an address a failed-over VM holds in a network failover created is taken there',
    input({
      source: { network: 'lab', subnet: 'front', ip: '192.168.5.20', subnetCidr: '192.168.5.0/24' },
      usedIps: [{ network: 'lab-asr', ip: '192.168.5.20' }],
    }),
    { ip: '192.168.5.21', created: true, reasons: { ip: 'next-free' } },
  ],
  [
    'ip: an address taken in another network does not count',
    input({
      usedIps: [
        { network: 'corp-asr', ip: '10.1.1.10' },
        { network: 'prod-vnet-dr', ip: 'dhcp' },
      ],
    }),
    { ip: '10.1.1.10', reasons: { ip: 'same-address' } },
  ],
  [
    'ip: an address a failed-over VM holds in the same network is taken',
    input({ usedIps: [{ network: 'prod-vnet-dr', ip: '10.1.1.10' }] }),
    { ip: '10.1.1.11', reasons: { ip: 'next-free' } },
  ],
  [
    'network: override beats the mapping',
    input({ overrides: { network: 'corp-asr' } }),
    { network: 'corp-asr', reasons: { network: 'override' } },
  ],
  [
    'network: override naming a network the region lacks → created (test-failover isolated network)',
    input({ overrides: { network: 'iso-net' } }),
    {
      network: 'iso-net',
      subnet: 'web',
      ip: '10.1.1.10',
      created: true,
      reasons: { network: 'override', subnet: 'created' },
    },
  ],
  [
    'network: mapping key that is an Object.prototype name is not a mapping',
    input({ source: { network: 'constructor', subnet: 'web', ip: 'dhcp' } }),
    { network: 'constructor-asr', created: true },
  ],
  // subnet
  [
    'subnet: same name as the source subnet',
    input({}),
    { subnet: 'web', subnetCidr: '10.1.1.0/24', reasons: { subnet: 'same-name' } },
  ],
  [
    'subnet: no such name → first alphabetically (apps, not the first listed)',
    input({ source: { subnet: 'frontend', ip: 'dhcp' } }),
    { subnet: 'apps', subnetCidr: '10.1.3.0/24', reasons: { subnet: 'first-alphabetical' } },
  ],
  [
    'subnet: first alphabetically in another network (beta before zeta)',
    input({ source: { network: 'corp', subnet: 'nope', ip: 'dhcp' } }),
    { network: 'corp-asr', subnet: 'beta', reasons: { subnet: 'first-alphabetical' } },
  ],
  [
    'subnet: override',
    input({ overrides: { subnet: 'apps' } }),
    { subnet: 'apps', reasons: { subnet: 'override', ip: 'first-free' }, ip: '10.1.3.4' },
  ],
  [
    'subnet: override in a network to be created names the created subnet',
    input({ overrides: { network: 'iso-net', subnet: 'test' } }),
    { network: 'iso-net', subnet: 'test', created: true, reasons: { subnet: 'override' } },
  ],
  // IP
  ['ip: DHCP stays DHCP', input({ source: { ip: 'dhcp' } }), { ip: 'dhcp', reasons: { ip: 'dhcp' } }],
  [
    'ip: static, inside the target subnet and free → same address',
    input({}),
    { ip: '10.1.1.10', reasons: { ip: 'same-address' } },
  ],
  [
    'ip: static, taken → next free after it',
    input({ usedIps: ['10.1.1.10', '10.1.1.11'] }),
    { ip: '10.1.1.12', reasons: { ip: 'next-free' } },
  ],
  [
    'ip: static, taken up to the end of the subnet → wraps to the first usable (.4)',
    input({ source: { ip: '10.1.1.253' }, usedIps: ['10.1.1.253', '10.1.1.254'] }),
    { ip: '10.1.1.4', reasons: { ip: 'next-free' } },
  ],
  [
    'ip: static, outside the target subnet → first free in it',
    input({ source: { subnet: 'frontend', ip: '10.1.1.10' } }),
    { subnet: 'apps', ip: '10.1.3.4', reasons: { ip: 'first-free' } },
  ],
  [
    'ip: static on a reserved address of the target subnet (.1 gateway) → first free',
    input({ source: { ip: '10.1.1.1' } }),
    { ip: '10.1.1.4', reasons: { ip: 'first-free' } },
  ],
  [
    'ip: static on the broadcast address → first free',
    input({ source: { ip: '10.1.1.255' } }),
    { ip: '10.1.1.4', reasons: { ip: 'first-free' } },
  ],
  [
    'ip: /29 with .4 and .5 taken → .6, the last usable',
    input({ source: { subnet: 'db', ip: '10.1.2.4' }, usedIps: ['10.1.2.4', '10.1.2.5'] }),
    { subnet: 'db', ip: '10.1.2.6', reasons: { ip: 'next-free' } },
  ],
  ['ip: override', input({ overrides: { ip: '10.1.1.77' } }), { ip: '10.1.1.77', reasons: { ip: 'override' } }],
  ['ip: override to DHCP', input({ overrides: { ip: 'dhcp' } }), { ip: 'dhcp', reasons: { ip: 'override' } }],
  [
    'ip: override of a static address in a DHCP VM',
    input({ source: { ip: 'dhcp' }, overrides: { ip: '10.1.1.9' } }),
    { ip: '10.1.1.9' },
  ],
  // availability set
  ['availability set: none', input({}), { availabilitySet: null, reasons: { availabilitySet: 'none' } }],
  [
    'availability set: region default',
    input({ region: { ...REGION, availabilitySet: 'as-dr' } }),
    { availabilitySet: 'as-dr', reasons: { availabilitySet: 'region-default' } },
  ],
  [
    'availability set: override',
    input({ region: { ...REGION, availabilitySet: 'as-dr' }, overrides: { availabilitySet: 'as-web' } }),
    { availabilitySet: 'as-web', reasons: { availabilitySet: 'override' } },
  ],
];

describe('planTarget', () => {
  it.each(rows)('%s', (_name, given, expected) => {
    const got = planTarget(given);
    const { reasons, ...fields } = expected;
    expect(got).toMatchObject(fields);
    if (reasons !== undefined) expect(got.reasons).toMatchObject(reasons);
  });

  it('returns every field of the manifest target for the plain case', () => {
    expect(planTarget(base)).toEqual({
      resourceGroup: 'web01-asr',
      network: 'prod-vnet-dr',
      subnet: 'web',
      subnetCidr: '10.1.1.0/24',
      ip: '10.1.1.10',
      availabilitySet: null,
      created: false,
      reasons: {
        resourceGroup: 'vm-default',
        network: 'network-mapping',
        subnet: 'same-name',
        ip: 'same-address',
        availabilitySet: 'none',
      },
    });
  });

  type Bad = [name: string, input: PlanTargetInput, message: RegExp];
  const bad: Bad[] = [
    ['bad source IP', input({ source: { ip: '10.1.1' } }), /source IP of web01 "10.1.1" is not an IPv4 address/],
    ['source IP with a leading zero', input({ source: { ip: '10.1.1.010' } }), /not an IPv4 address/],
    ['source IP octet > 255', input({ source: { ip: '10.1.1.256' } }), /not an IPv4 address/],
    ['bad override IP', input({ overrides: { ip: 'fe80::1' } }), /--target-ip "fe80::1" is not an IPv4 address/],
    [
      'override IP outside the subnet',
      input({ overrides: { ip: '10.9.9.9' } }),
      /--target-ip 10.9.9.9 is outside subnet web \(10.1.1.0\/24\)/,
    ],
    ['override IP reserved', input({ overrides: { ip: '10.1.1.3' } }), /--target-ip 10.1.1.3 is reserved/],
    ['override IP in use', input({ overrides: { ip: '10.1.1.50' }, usedIps: ['10.1.1.50'] }), /already in use/],
    ['bad used IP', input({ usedIps: ['x'] }), /used IP "x"/],
    [
      'region subnet CIDR with a bad prefix',
      input({ region: { networks: [{ name: 'prod-vnet-dr', subnets: [{ name: 'web', cidr: '10.1.1.0/33' }] }] } }),
      /subnet web of network prod-vnet-dr "10.1.1.0\/33" is not a CIDR block/,
    ],
    [
      'region subnet CIDR without a prefix',
      input({ region: { networks: [{ name: 'prod-vnet-dr', subnets: [{ name: 'web', cidr: '10.1.1.0' }] }] } }),
      /is not a CIDR block like 10.0.1.0\/24/,
    ],
    [
      'region subnet CIDR with host bits set',
      input({ region: { networks: [{ name: 'prod-vnet-dr', subnets: [{ name: 'web', cidr: '10.1.1.7/24' }] }] } }),
      /has host bits set; the block starting there is 10.1.1.0\/24/,
    ],
    [
      'bad source subnet CIDR',
      input({ source: { subnetCidr: '300.0.0.0/8' } }),
      /source subnet web address "300.0.0.0"/,
    ],
    [
      'subnet override that does not exist',
      input({ overrides: { subnet: 'nope' } }),
      /--target-subnet "nope" does not exist in target network prod-vnet-dr \(it has: web 10.1.1.0\/24, db/,
    ],
    [
      'target network without subnets',
      input({ overrides: { network: 'empty-vnet' } }),
      /target network empty-vnet has no subnet/,
    ],
    [
      'full subnet',
      input({ source: { subnet: 'db', ip: '10.1.2.4' }, usedIps: ['10.1.2.4', '10.1.2.5', '10.1.2.6'] }),
      /subnet db \(10.1.2.0\/29\) has no free address for web01; choose another subnet/,
    ],
    [
      '/31 subnet has no usable address',
      input({ region: { networks: [{ name: 'prod-vnet-dr', subnets: [{ name: 'web', cidr: '10.1.1.0/31' }] }] } }),
      /has no free address/,
    ],
    ['empty override name', input({ overrides: { network: '' } }), /--target-network "" must be a non-empty name/],
    [
      'duplicate network in the region',
      input({ region: { networks: [REGION.networks[0]!, REGION.networks[0]!] } }),
      /listed twice/,
    ],
    ['empty source network', input({ source: { network: ' ' } }), /source network/],
  ];

  it.each(bad)('refuses %s with SR_BAD_OPTION and an actionable message', (_name, given, message) => {
    let caught: unknown;
    try {
      planTarget(given);
    } catch (err) {
      caught = err;
    }
    expect(isSrError(caught, ErrorCode.BAD_OPTION)).toBe(true);
    expect((caught as Error).message).toMatch(message);
  });
});
