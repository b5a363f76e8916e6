import fsp from 'node:fs/promises';
import { z } from 'zod';
import { ErrorCode, ID_PATTERN, SrError, readJsonIfExists, writeFileAtomic } from '@site-recovery/shared';
import { failoverStateFile, testFailoverRoot, testFailoverStateFile, vmStateDir, vmsDir } from '../names.js';

// The state files of failover and test failover hold ids and names, never paths: every path a
// failover, its undoing or a test failover's cleanup touches is built again from the VM name (and
// resource group) by names.ts, so an edited or forged state file cannot aim a delete anywhere else.

/** Where a VM's (real) failover stands, as `failover.json` records it. */
export interface FailoverRecord {
  readonly state: 'in-progress' | 'failed-over' | 'committed';
  readonly point?: string;
  /** The resource group whose directory, `failover/<vm>/<resource-group>/`, holds the recovered disks. */
  readonly resourceGroup?: string;
}

const FailoverFileSchema = z.object({
  state: z.enum(['in-progress', 'failed-over', 'committed']),
  point: z.string().optional(),
  resourceGroup: z.string().regex(ID_PATTERN).optional(),
});

/**
 * Directories a test failover may have to create around its own and the state file, by what they are:
 * the cleanup removes those it created, once empty.
 */
const AROUND_DIRS = ['test-failover-root', 'vms-root', 'vm-state-dir'] as const;
export type AroundDir = (typeof AROUND_DIRS)[number];

/** What `test-failover.json` records: the point recovered and the directories created around it. */
export interface TestFailoverRecord {
  readonly point: string;
  readonly createdDirs: readonly AroundDir[];
}

const TestFileSchema = z.object({
  point: z.string(),
  createdDirs: z.array(z.enum(AROUND_DIRS)).default([]),
});

export async function readFailoverRecord(dataDir: string, vm: string): Promise<FailoverRecord | undefined> {
  return readState(failoverStateFile(dataDir, vm), FailoverFileSchema, 'failover');
}

export async function writeFailoverRecord(dataDir: string, vm: string, r: FailoverRecord): Promise<void> {
  await fsp.mkdir(vmStateDir(dataDir, vm), { recursive: true });
  await writeFileAtomic(failoverStateFile(dataDir, vm), JSON.stringify(r) + '\n');
}

export async function removeFailoverRecord(dataDir: string, vm: string): Promise<void> {
  await fsp.rm(failoverStateFile(dataDir, vm), { force: true });
}

export async function readTestFailoverRecord(dataDir: string, vm: string): Promise<TestFailoverRecord | undefined> {
  return readState(testFailoverStateFile(dataDir, vm), TestFileSchema, 'test failover');
}

/**
 * Records a test failover before anything of it exists (so a cleanup after a crash still finds all of
 * it): which of the directories around it are missing and will be created.
 */
export async function beginTestFailoverRecord(dataDir: string, vm: string, point: string): Promise<void> {
  const createdDirs: AroundDir[] = [];
  for (const d of AROUND_DIRS) if (!(await exists(aroundDir(dataDir, vm, d)))) createdDirs.push(d);
  await fsp.mkdir(vmStateDir(dataDir, vm), { recursive: true });
  const record: TestFailoverRecord = { point, createdDirs };
  await writeFileAtomic(testFailoverStateFile(dataDir, vm), JSON.stringify(record) + '\n');
}

export function aroundDir(dataDir: string, vm: string, d: AroundDir): string {
  switch (d) {
    case 'test-failover-root':
      return testFailoverRoot(dataDir);
    case 'vms-root':
      return vmsDir(dataDir);
    case 'vm-state-dir':
      return vmStateDir(dataDir, vm);
  }
}

/** A state file as its schema says, `undefined` when absent; anything else is SR_STATE_MISMATCH. */
async function readState<T>(file: string, schema: z.ZodType<T>, what: string): Promise<T | undefined> {
  let raw: unknown;
  try {
    raw = await readJsonIfExists(file);
  } catch (err) {
    throw new SrError(ErrorCode.STATE_MISMATCH, `${what} state ${file} is unreadable: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (raw === undefined) return undefined;
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new SrError(
      ErrorCode.STATE_MISMATCH,
      `${what} state ${file} is invalid at "${issue?.path.join('.') ?? ''}": ${issue?.message ?? ''}; restore it from a backup or remove it`,
    );
  }
  return parsed.data;
}

async function exists(p: string): Promise<boolean> {
  try {
    await fsp.access(p);
    return true;
  } catch {
    return false;
  }
}
