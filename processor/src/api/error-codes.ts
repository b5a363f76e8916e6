import { defaultHttpError } from '@site-recovery/shared';

/**
 * Codes only the processor's control API produces (recovery points, failover, replication groups). They live here and
 * not in shared/errors.ts because no other component sends or matches them; they are as stable as
 * the shared ones: operators and the `sr` CLI match on them.
 */
export const PointErrorCode = {
  /** No point with that id or at/before that time. */
  POINT_NOT_FOUND: 'SR_POINT_NOT_FOUND',
  /** The point existed but retention removed it. */
  POINT_PRUNED: 'SR_POINT_PRUNED',
  /** The VM's replica is mid-resync: no point may be cut (DESIGN.md invariant 5). */
  RESYNCING: 'SR_RESYNCING',
  /** A failover (or test failover) of this VM is already running or still present. */
  FAILOVER_IN_PROGRESS: 'SR_FAILOVER_IN_PROGRESS',
  /** The VM has been failed over; only a test failover or commit is possible. */
  FAILED_OVER: 'SR_FAILED_OVER',
  /** Commit asked of a VM that was not failed over. */
  NOT_FAILED_OVER: 'SR_NOT_FAILED_OVER',
  /** The VM is unknown to this processor. */
  VM_NOT_FOUND: 'SR_VM_NOT_FOUND',
  /** No test failover to clean up. */
  NO_TEST_FAILOVER: 'SR_NO_TEST_FAILOVER',
  /** No replication group of that name has members on this processor. */
  GROUP_NOT_FOUND: 'SR_GROUP_NOT_FOUND',
  /** No group point of that id (or none at all) that every member of the group holds. */
  GROUP_POINT_NOT_FOUND: 'SR_GROUP_POINT_NOT_FOUND',
} as const;

export type PointErrorCode = (typeof PointErrorCode)[keyof typeof PointErrorCode];

/** An error of the control API with a processor-local code. */
export class PointError extends Error {
  constructor(
    readonly code: PointErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'PointError';
  }
}

const STATUS: Readonly<Record<string, number>> = {
  [PointErrorCode.POINT_NOT_FOUND]: 404,
  [PointErrorCode.VM_NOT_FOUND]: 404,
  [PointErrorCode.NO_TEST_FAILOVER]: 404,
  [PointErrorCode.GROUP_NOT_FOUND]: 404,
  [PointErrorCode.GROUP_POINT_NOT_FOUND]: 404,
  [PointErrorCode.POINT_PRUNED]: 410,
  [PointErrorCode.RESYNCING]: 409,
  [PointErrorCode.FAILOVER_IN_PROGRESS]: 409,
  [PointErrorCode.FAILED_OVER]: 409,
  [PointErrorCode.NOT_FAILED_OVER]: 409,
};

/** The HTTP status and `{code, message}` body for an error thrown by a handler. */
export function httpError(err: unknown): { status: number; body: { code: string; message: string } } {
  if (err instanceof PointError)
    return { status: STATUS[err.code] ?? 500, body: { code: err.code, message: err.message } };
  return defaultHttpError(err);
}
