import { z } from 'zod';
import {
  ErrorCode,
  GENERATION_PATTERN,
  ID_PATTERN,
  ROUND_PATTERN,
  SrError,
  readJsonIfExists,
  writeFileAtomic,
} from '@site-recovery/shared';
import { POINT_ID_PATTERN, isUndoLogName } from '../names.js';
import { POINT_KINDS, type RecoveryPoint } from './recovery-point.js';

/**
 * `points.json` of one replica: the points in LSN order (oldest first), the block size their undo
 * logs use, and the ids retention removed (so a failover can say "pruned" rather than "unknown").
 * Replaced atomically; it is the only thing that says which undo log belongs to which point.
 */
export interface PointCatalog {
  readonly blockSize: number;
  readonly points: readonly RecoveryPoint[];
  readonly pruned: readonly string[];
}

const id = z.string().regex(ID_PATTERN);
const round = z.string().regex(ROUND_PATTERN);

const RoundTagSchema = z.object({
  group: id,
  round,
  members: z.array(id).min(1),
  coordinator: id,
  time: z.number().int().min(0),
  state: z.enum(['pending', 'committed', 'failed']),
  failure: z
    .object({ failedBy: id.optional(), code: z.string(), reason: z.string(), at: z.string().datetime() })
    .optional(),
});

const PointSchema = z.object({
  id: z.string().regex(POINT_ID_PATTERN),
  time: z.string().datetime(),
  lsn: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  kind: z.enum(POINT_KINDS as [string, ...string[]]),
  generation: z.string().regex(GENERATION_PATTERN),
  undoLog: z.string().refine(isUndoLogName, 'not an undo log name'),
  undoBytes: z.number().int().min(0),
  round: RoundTagSchema.optional(),
  group: z.object({ name: id, point: round }).optional(),
});

const CatalogSchema = z.object({
  version: z.literal(1),
  blockSize: z
    .number()
    .int()
    .min(512)
    .max(64 << 20),
  points: z.array(PointSchema),
  pruned: z.array(z.string().regex(POINT_ID_PATTERN)),
});

export async function readCatalog(file: string): Promise<PointCatalog | undefined> {
  let raw: unknown;
  try {
    raw = await readJsonIfExists(file);
  } catch (err) {
    throw new SrError(ErrorCode.STATE_MISMATCH, `point catalog ${file} is unreadable: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (raw === undefined) return undefined;
  const parsed = CatalogSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new SrError(
      ErrorCode.STATE_MISMATCH,
      `point catalog ${file} is invalid at "${issue?.path.join('.') ?? ''}": ${issue?.message ?? ''}`,
    );
  }
  const c = parsed.data;
  return { blockSize: c.blockSize, points: c.points as RecoveryPoint[], pruned: c.pruned };
}

export async function writeCatalog(file: string, c: PointCatalog): Promise<void> {
  const body = { version: 1, blockSize: c.blockSize, points: c.points, pruned: c.pruned };
  await writeFileAtomic(file, JSON.stringify(body, null, 1) + '\n');
}
