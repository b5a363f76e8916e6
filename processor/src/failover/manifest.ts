import fsp from 'node:fs/promises';
import { z } from 'zod';
import { readJsonIfExists, systemErrorCode, writeFileAtomic } from '@site-recovery/shared';
import {
  failoverDir,
  failoverRoot,
  manifestFile,
  parseIdDirName,
  testFailoverDir,
  testFailoverRoot,
  vmFailoverDir,
} from '../names.js';
import type { GroupPointRef, PointKind } from '../points/recovery-point.js';
import type { ResolvedTarget } from './target-planner.js';
import type { TakenAddress } from './target-resources.js';

/** A member failed over without the rest of its replication group: which group, who still replicates. */
export interface GroupSplit {
  readonly group: string;
  readonly left: readonly string[];
}

/** What failover and test failover write beside the recovered disks, and answer with. */
export interface Manifest {
  readonly vm: string;
  readonly kind: 'failover' | 'test-failover';
  readonly point: { id: string; time: string; lsn: number; kind: PointKind; group?: GroupPointRef };
  readonly createdAt: string;
  readonly target: ResolvedTarget;
  readonly disks: { id: string; size: number; path: string }[];
  /** Set when this failover splits the VM's replication group. */
  readonly split?: GroupSplit;
}

const ManifestTargetSchema = z.object({ target: z.object({ network: z.string(), ip: z.string() }) });

export async function writeManifest(dir: string, manifest: Manifest): Promise<void> {
  await writeFileAtomic(manifestFile(dir), JSON.stringify(manifest, null, 2) + '\n');
}

/**
 * The network and address of every VM a failover or test failover has placed, read from their
 * manifests, so that no two are planned onto one address. A manifest that is missing or unreadable
 * (a failover cut short) holds no address.
 */
export async function placedAddresses(dataDir: string): Promise<TakenAddress[]> {
  const files: string[] = [];
  for (const vm of await idDirs(failoverRoot(dataDir))) {
    for (const rg of await idDirs(vmFailoverDir(dataDir, vm))) files.push(manifestFile(failoverDir(dataDir, vm, rg)));
  }
  for (const vm of await idDirs(testFailoverRoot(dataDir))) files.push(manifestFile(testFailoverDir(dataDir, vm)));
  const out: TakenAddress[] = [];
  for (const f of files) {
    const m = ManifestTargetSchema.safeParse(await readJsonIfExists(f).catch(() => undefined));
    if (m.success) out.push({ network: m.data.target.network, ip: m.data.target.ip });
  }
  return out;
}

/** Subdirectories of `dir` named by an id; anything else in there is not ours to read. */
async function idDirs(dir: string): Promise<string[]> {
  try {
    return (await fsp.readdir(dir, { withFileTypes: true }))
      .filter((e) => e.isDirectory() && parseIdDirName(e.name) !== undefined)
      .map((e) => e.name);
  } catch (err) {
    if (systemErrorCode(err) === 'ENOENT') return [];
    throw err;
  }
}
