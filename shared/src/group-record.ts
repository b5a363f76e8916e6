import { z } from 'zod';
import { RecordKind, MAX_GROUP_RECORD_BYTES } from './change-record.js';
import { ErrorCode, SrError } from './errors.js';
import { ID_PATTERN } from './ids.js';

/**
 * The documents a replication group's records carry in the stream (docs/multi-vm.md). The agent
 * writes them into its journal at the barrier; the processor reads them to decide which cuts form a
 * multi-VM point. JSON, so that `sr-journal` and an operator can read them as they are.
 */
const id = z.string().regex(ID_PATTERN);
/** A round: `<term>.<seq>`, unique within a group (terms only grow, one coordinator per term). */
export const ROUND_PATTERN = /^[0-9]{1,15}\.[0-9]{1,15}$/;
const round = z.string().regex(ROUND_PATTERN);

export const GroupMarkSchema = z.object({
  group: id,
  round,
  coordinator: id,
  /** Every VM the round cuts, this one included: the point exists only if all of them commit. */
  members: z.array(id).min(1).max(1024),
  /** The coordinator's clock when it started the round (ms since the epoch): the group point's time. */
  // Bounded to what a Date can hold: the processor shows it as ISO 8601.
  time: z.number().int().min(0).max(8_640_000_000_000_000),
});
export type GroupMark = z.infer<typeof GroupMarkSchema>;

export const GroupCommitSchema = z.object({ group: id, round });
export type GroupCommit = z.infer<typeof GroupCommitSchema>;

export const GroupAbortSchema = z.object({
  group: id,
  round,
  /** The member that failed the round, when one is known (it did not answer, or refused). */
  failedBy: id.optional(),
  /** A stable code: SR_GROUP_TIMEOUT, SR_GROUP_MEMBER_DOWN, SR_GROUP_REFUSED, ... */
  code: z.string().max(64),
  reason: z.string().max(1024),
});
export type GroupAbort = z.infer<typeof GroupAbortSchema>;

export type GroupRecord =
  | { readonly kind: typeof RecordKind.GROUP_MARK; readonly doc: GroupMark }
  | { readonly kind: typeof RecordKind.GROUP_COMMIT; readonly doc: GroupCommit }
  | { readonly kind: typeof RecordKind.GROUP_ABORT; readonly doc: GroupAbort };

/** The payload of a group record. */
export function encodeGroupRecord(doc: GroupMark | GroupCommit | GroupAbort): Buffer {
  const b = Buffer.from(JSON.stringify(doc), 'utf8');
  if (b.length > MAX_GROUP_RECORD_BYTES)
    throw new SrError(ErrorCode.LIMIT, `group record of ${b.length} bytes exceeds ${MAX_GROUP_RECORD_BYTES}`);
  return b;
}

/** Parses and validates a group record's payload; SR_PROTOCOL when it is not what its kind says. */
export function decodeGroupRecord(kind: number, data: Uint8Array | undefined): GroupRecord {
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(data ?? new Uint8Array()).toString('utf8'));
  } catch {
    throw new SrError(ErrorCode.PROTOCOL, 'group record payload is not JSON');
  }
  const parse = <T>(schema: z.ZodType<T>): T => {
    const r = schema.safeParse(json);
    if (!r.success) throw new SrError(ErrorCode.PROTOCOL, `group record: ${r.error.issues[0]?.message ?? 'invalid'}`);
    return r.data;
  };
  switch (kind) {
    case RecordKind.GROUP_MARK:
      return { kind, doc: parse(GroupMarkSchema) };
    case RecordKind.GROUP_COMMIT:
      return { kind, doc: parse(GroupCommitSchema) };
    case RecordKind.GROUP_ABORT:
      return { kind, doc: parse(GroupAbortSchema) };
    default:
      throw new SrError(ErrorCode.PROTOCOL, `record kind ${kind} is not a group record`);
  }
}
