import {
  DiskInfoSchema,
  ErrorCode,
  GENERATION_PATTERN,
  ID_PATTERN,
  SourceModeSchema,
  SrError,
  readJsonIfExists,
  writeFileAtomic,
  type DiskInfo,
  type SourceMode,
} from '@site-recovery/shared';
import { metaFile } from '../names.js';
import type { SpaceReserve } from './space-reserve.js';
import { storageError } from './storage-errors.js';

/**
 * What a VM's directory holds besides its segments: which generation the segments belong to, the
 * disk layout records refer to by index, how far the processor has applied, and the replication
 * group the agent last named (so the processor learns it from the `vms` list even while the agent is
 * away, after a cache-store restart). Segments of any other generation are leftovers of a
 * replacement interrupted by a crash.
 */
export interface VmMeta {
  readonly version: 1;
  readonly vm: string;
  readonly generation: string;
  readonly disks: readonly DiskInfo[];
  readonly appliedLsn: number;
  /** The agent's replication group (docs/multi-vm.md), absent when it named none. */
  readonly group?: string;
  /** The agent's mode (`watch` for an agent that watches image files); absent: it named none (`nbd`). */
  readonly mode?: SourceMode;
}

const DisksSchema = DiskInfoSchema.array().min(1);

/** Reads and checks a meta file; `undefined` when there is none. */
export async function readVmMeta(file: string, vm: string): Promise<VmMeta | undefined> {
  let raw: unknown;
  try {
    raw = await readJsonIfExists(file);
  } catch (err) {
    throw new SrError(ErrorCode.JOURNAL_CORRUPT, `${file}: unreadable (${(err as Error).message})`, { cause: err });
  }
  if (raw === undefined) return undefined;
  const bad = (what: string): SrError => new SrError(ErrorCode.JOURNAL_CORRUPT, `${file}: ${what}`);
  if (typeof raw !== 'object' || raw === null) throw bad('not a JSON object');
  const m = raw as Record<string, unknown>;
  if (m['version'] !== 1) throw bad(`unsupported version ${String(m['version'])}`);
  if (m['vm'] !== vm) throw bad(`belongs to VM "${String(m['vm'])}", not "${vm}"`);
  const generation = m['generation'];
  if (typeof generation !== 'string' || !GENERATION_PATTERN.test(generation))
    throw bad('missing or invalid generation');
  const disks = DisksSchema.safeParse(m['disks']);
  if (!disks.success) throw bad('missing or invalid disks');
  const appliedLsn = m['appliedLsn'];
  if (typeof appliedLsn !== 'number' || !Number.isSafeInteger(appliedLsn) || appliedLsn < 0)
    throw bad('missing or invalid appliedLsn');
  const group = m['group'];
  if (group !== undefined && (typeof group !== 'string' || !ID_PATTERN.test(group))) throw bad('invalid group');
  const mode = m['mode'] === undefined ? undefined : SourceModeSchema.safeParse(m['mode']);
  if (mode !== undefined && !mode.success) throw bad('invalid mode');
  return {
    version: 1,
    vm,
    generation,
    disks: disks.data,
    appliedLsn,
    ...(group !== undefined ? { group } : {}),
    ...(mode !== undefined ? { mode: mode.data } : {}),
  };
}

export async function writeVmMeta(file: string, meta: VmMeta): Promise<void> {
  await writeFileAtomic(file, JSON.stringify(meta, null, 2) + '\n');
}

/**
 * Writes the meta file of the VM directory `dir` while the VM's log runs: on a full disk it may spend
 * the store's reserve (SpaceReserve), since a release recorded here is what frees segments.
 */
export async function recordVmMeta(
  dir: string,
  meta: VmMeta,
  reserve: SpaceReserve | undefined,
  what: string,
): Promise<void> {
  const write = async (): Promise<void> => {
    try {
      await writeVmMeta(metaFile(dir), meta);
    } catch (err) {
      throw storageError(err, `${meta.vm}: ${what}`);
    }
  };
  await (reserve !== undefined ? reserve.withRoom(write) : write());
}
