import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createLogger } from '@site-recovery/shared';
import { readRegionConfig, watchRegionConfig, type RegionConfig } from '../../src/failover/region-config.js';
import { createTargetPlanner } from '../../src/failover/target-resources.js';

describe('--region file', () => {
  it('drives failover placement: mapped network, subnet by name, static IP kept when free', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sr-region-'));
    const file = path.join(dir, 'region.json');
    await fs.writeFile(
      file,
      JSON.stringify({
        resourceGroup: 'dr-rg',
        networks: [
          {
            name: 'prod-dr',
            subnets: [
              { name: 'app', cidr: '10.1.0.0/24' },
              { name: 'web', cidr: '10.2.0.0/24' },
            ],
          },
        ],
        networkMapping: { prod: 'prod-dr' },
      }),
    );
    const planner = createTargetPlanner(readRegionConfig(file));
    const p = planner.plan({
      vm: 'web01',
      source: { network: 'prod', subnet: 'web', ip: '10.2.0.10' },
      target: {},
      test: false,
    });
    expect(p).toEqual({
      resourceGroup: 'dr-rg',
      network: 'prod-dr',
      subnet: 'web',
      ip: '10.2.0.10',
      availabilitySet: null,
    });
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

  it('follows edits of the file, and keeps the last good config when an edit does not parse', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sr-region-'));
    const file = path.join(dir, 'region.json');
    await fs.writeFile(file, JSON.stringify({ resourceGroup: 'first-rg', networks: [] }));
    const seen: RegionConfig[] = [];
    const stop = watchRegionConfig(file, (c) => seen.push(c), createLogger('test', 'silent'));
    await new Promise((r) => setTimeout(r, 300)); // let the watcher settle
    await fs.writeFile(file, JSON.stringify({ resourceGroup: 'second-rg', networks: [] }));
    for (let i = 0; i < 100 && seen.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
    expect(seen.map((c) => c.region.resourceGroup)).toEqual(['second-rg']);
    await fs.writeFile(file, '{ not json');
    await new Promise((r) => setTimeout(r, 800));
    expect(seen.map((c) => c.region.resourceGroup)).toEqual(['second-rg']); // the broken edit changed nothing
    await stop();
    await fs.rm(dir, { recursive: true, force: true });
  });
});
