import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readRegionConfig } from '../src/region-config.js';
import { createTargetPlanner } from '../src/target-resources.js';

describe('--region file', () => {
  it('drives failover placement: mapped network, subnet by name, static IP kept when free', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sr-region-'));
    const file = path.join(dir, 'region.json');
    await fs.writeFile(file, JSON.stringify({ resourceGroup: 'dr-rg', networks: [{ name: 'prod-dr', subnets: [{ name: 'app', cidr: '10.1.0.0/24' }, { name: 'web', cidr: '10.2.0.0/24' }] }], networkMapping: { prod: 'prod-dr' } }));
    const planner = createTargetPlanner(readRegionConfig(file));
    const p = planner.plan({ vm: 'web01', source: { network: 'prod', subnet: 'web', ip: '10.2.0.10' }, target: {}, test: false });
    expect(p).toEqual({ resourceGroup: 'dr-rg', network: 'prod-dr', subnet: 'web', ip: '10.2.0.10', availabilitySet: null });
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('refuses an unreadable or malformed file with SR_BAD_OPTION', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sr-region-'));
    const file = path.join(dir, 'region.json');
    expect(() => readRegionConfig(file)).toThrow(expect.objectContaining({ code: 'SR_BAD_OPTION' }) as Error);
    await fs.writeFile(file, JSON.stringify({ networks: [{ name: 'x', subnets: [{ name: 'a' }] }] }));
    expect(() => readRegionConfig(file)).toThrow(expect.objectContaining({ code: 'SR_BAD_OPTION' }) as Error);
    await fs.rm(dir, { recursive: true, force: true });
  });
});
