import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { createLogger } from '@site-recovery/shared';
import { readRegionConfig, watchRegionConfig, type RegionConfig } from '../../src/failover/region-config.js';
import { createTargetPlanner } from '../../src/failover/target-resources.js';
import { Condition } from '../condition.js';

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
    const events = new Condition();
    const seen: RegionConfig[] = [];
    const refused: string[] = [];
    const log = createLogger('test', 'silent');
    vi.spyOn(log, 'error').mockImplementation((_obj: unknown, msg?: string) => {
      refused.push(String(msg));
      events.changed();
    });
    const stop = watchRegionConfig(
      file,
      (c) => {
        seen.push(c);
        events.changed();
      },
      log,
    );
    // The watcher tells no one when it is ready: the edit is made again until it is seen.
    const second = JSON.stringify({ resourceGroup: 'second-rg', networks: [] });
    const deadline = Date.now() + 15_000;
    while (seen.length === 0) {
      if (Date.now() > deadline) throw new Error('the watcher never reported the edit to second-rg');
      await fs.writeFile(file, second);
      await events.until('the edit to second-rg', () => (seen.length > 0 ? true : undefined), 1000).catch(() => {});
    }
    await fs.writeFile(file, '{ not json');
    await events.until('the watcher to refuse the broken edit', () => (refused.length > 0 ? true : undefined));
    expect(refused).toHaveLength(1);
    // The broken edit changed nothing: no config but the good edit was ever applied.
    expect([...new Set(seen.map((c) => c.region.resourceGroup))]).toEqual(['second-rg']);
    await stop();
    await fs.rm(dir, { recursive: true, force: true });
  });
});
