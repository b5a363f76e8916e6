import fsp from 'node:fs/promises';
import path from 'node:path';
import { createLogger } from '@site-recovery/shared';
import { makeImage } from '@site-recovery/test';
import { Agent } from '../src/agent.js';
import type { AgentConfig } from '../src/agent-config.js';

/** The size raw-nbd.ts's `openExport` expects. */
export const DISK_SIZE = 16 << 20;

/**
 * An agent in this process, on a loopback port chosen at run time, with one disk `os` of
 * {@link DISK_SIZE} at `<dir>/<vm>.img` (created if missing) and its data dir at `<dir>/<vm>-data`.
 * In-process so that a test can put a fault filter below its capture point.
 */
export async function startInProcess(
  dir: string,
  vm: string,
  more: Partial<Omit<AgentConfig, 'vm' | 'disks' | 'dataDir' | 'log'>> = {},
): Promise<{ agent: Agent; image: string; dataDir: string }> {
  const image = path.join(dir, `${vm}.img`);
  if (!(await fsp.stat(image).catch(() => undefined))) await makeImage(image, DISK_SIZE);
  const dataDir = path.join(dir, `${vm}-data`);
  const agent = await Agent.start({
    vm,
    disks: [{ id: 'os', path: image }],
    nbdHost: '127.0.0.1',
    nbdPort: 0,
    dataDir,
    // Checkpoints only when the test asks (agent.checkpoint()), unless it says otherwise.
    checkpointIntervalMs: 3_600_000,
    log: createLogger(vm, process.env['SR_LOG_LEVEL'] ?? 'silent'),
    ...more,
  });
  return { agent, image, dataDir };
}

/** The LSN `checkpoint.json` of a data dir names. */
export async function checkpointOnDisk(dataDir: string): Promise<number> {
  return (JSON.parse(await fsp.readFile(path.join(dataDir, 'checkpoint.json'), 'utf8')) as { lsn: number }).lsn;
}
