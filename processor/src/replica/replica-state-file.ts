import { z } from 'zod';
import {
  DiskInfoSchema,
  ErrorCode,
  GENERATION_PATTERN,
  ID_PATTERN,
  SrError,
  readJsonIfExists,
  writeFileAtomic,
} from '@site-recovery/shared';
import type { ReplicaInfo } from './replica-store.js';

/** `state.json` of a local replica. Checked field by field on read: it is the one thing a restart trusts. */
const StateSchema = z.object({
  version: z.literal(1),
  vm: z.string().regex(ID_PATTERN),
  generation: z.string().regex(GENERATION_PATTERN),
  disks: z.array(DiskInfoSchema).min(1),
  appliedLsn: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  initialSync: z.object({
    state: z.enum(['copying', 'done', 'none']),
    done: z.number().int().min(0),
    total: z.number().int().min(0),
    resync: z.object({ remaining: z.number().int().min(1), total: z.number().int().min(1) }).optional(),
  }),
  wipePending: z.boolean().optional(),
});

/**
 * The persisted state plus what only the file layout needs: `wipePending` is set, together with a
 * new generation, before the disks are zeroed and cleared once they are, so a crash in between is
 * finished on the next open rather than leaving old data under a new generation.
 */
export interface ReplicaStateFile extends ReplicaInfo {
  readonly wipePending: boolean;
}

/** The state in `file`, or `undefined` when there is none. A file that does not parse is refused. */
export async function readReplicaState(file: string): Promise<ReplicaStateFile | undefined> {
  let raw: unknown;
  try {
    raw = await readJsonIfExists(file);
  } catch (err) {
    throw new SrError(
      ErrorCode.STATE_MISMATCH,
      `replica state ${file} is unreadable (${(err as Error).message}); move the replica aside to resync it`,
      { cause: err },
    );
  }
  if (raw === undefined) return undefined;
  const parsed = StateSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new SrError(
      ErrorCode.STATE_MISMATCH,
      `replica state ${file} is invalid at "${issue?.path.join('.') ?? ''}": ${issue?.message ?? ''}; move the replica aside to resync it`,
    );
  }
  const { vm, generation, disks, appliedLsn, initialSync: i, wipePending } = parsed.data;
  const initialSync = {
    state: i.state,
    done: i.done,
    total: i.total,
    ...(i.resync !== undefined ? { resync: i.resync } : {}),
  };
  return { vm, generation, disks, appliedLsn, initialSync, wipePending: wipePending ?? false };
}

export async function writeReplicaState(file: string, s: ReplicaStateFile): Promise<void> {
  const body = {
    version: 1,
    vm: s.vm,
    generation: s.generation,
    disks: s.disks.map((d) => ({ id: d.id, size: d.size })),
    appliedLsn: s.appliedLsn,
    initialSync: s.initialSync,
    ...(s.wipePending ? { wipePending: true } : {}),
    updated: new Date().toISOString(),
  };
  await writeFileAtomic(file, JSON.stringify(body, null, 2) + '\n');
}
